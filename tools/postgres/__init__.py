"""PostgreSQL for the sandbox without Docker: a throwaway server from the system's binaries."""
