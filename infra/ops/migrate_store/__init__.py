"""Copy a SQLite-backed MLflow store into PostgreSQL and verify the copy: `python -m infra.ops.migrate_store`.

__main__.py is the command; tables.py reads and copies MLflow's tables; checksums.py compares both sides.
"""
