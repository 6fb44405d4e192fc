"""The benchmark's profile summary: py-spy's raw stacks of the event loop, put into stages."""

from __future__ import annotations

from tools.benchmark.profile import event_loop_samples, stage_of

LOOP = "<module> (mlserver:6);run (asyncio/runners.py:190);Runner.run (asyncio/runners.py:118)"
HANDLER = f"{LOOP};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:411)"
RAW = "\n".join(
    [
        f"{HANDLER};Request.json (mlserver/rest/requests.py:31) 30",
        f"{HANDLER};RegistryModelRuntime.predict (services/serving/runtime.py:80);"
        "Module._call_impl (torch/nn/modules/module.py:1794);Linear.forward (torch/nn/modules/linear.py:134) 50",
        f"{HANDLER};Route.handle (starlette/routing.py:459) 15",
        f"{LOOP} 5",
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 400",
    ]
)


def test_samples_of_the_event_loop_are_summed_by_stage() -> None:
    samples = event_loop_samples(RAW)
    assert samples == {
        "model forward pass (torch)": 50,
        "JSON parsing (orjson)": 30,
        "HTTP/gRPC plumbing (uvicorn, Starlette, FastAPI, grpc.aio, MLServer)": 15,
        "event loop, native I/O (uvloop, gRPC C core) and the rest": 5,
    }, "other threads (the 400 samples) are not the server's critical path"


def test_the_innermost_work_wins_over_the_handler_around_it() -> None:
    forward_inside_batching = f"{HANDLER};AdaptiveBatcher._batcher (x.py:1);Module._call_impl (m.py:1)"
    assert stage_of(forward_inside_batching) == "model forward pass (torch)"


def test_the_shortcuts_stages_are_named() -> None:
    middleware = f"{HANDLER};DirectJsonMiddleware.__call__ (services/serving/rest_direct.py:130)"
    answered = f"{middleware};DirectJsonMiddleware._answered (services/serving/rest_direct.py:140)"
    assert stage_of(f"{answered};request_of (services/serving/rest_direct.py:70)") == "JSON parsing (orjson)"
    assert stage_of(f"{answered};decoded (services/serving/rest_direct.py:81)").startswith("tensor decoding")
    assert stage_of(f"{answered};answer_json (services/serving/rest_direct.py:187)").startswith("response encoding")
    gathered = f"{LOOP};Gathered._run (services/serving/shortcut.py:110)"
    assert stage_of(f"{gathered};RegistryModelRuntime.predict_arrays (services/serving/runtime.py:237)").startswith(
        "adaptive batching"
    )
    assert stage_of(f"{gathered};Module._call_impl (torch/nn/modules/module.py:1794)") == "model forward pass (torch)"
