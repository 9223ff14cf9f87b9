"""The stage frame's runtime: device choice, threads, and determinism on a GPU (simulated here:
torch reports an operation without a deterministic CUDA kernel as a warning or an error whose
text this module reads)."""

import types
import warnings

import pytest
import torch
import yaml

from fragile_neurons.running.errors import ParamError
from fragile_neurons.running.runtime import cpu_model, select_device, watch_nondeterminism
from fragile_neurons.running.stage import Context, run_stage

TORCH_SAYS = (
    "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you set "
    "'torch.use_deterministic_algorithms(True, warn_only=True)'."
)


def test_a_nondeterministic_op_is_recorded_once_and_still_shown():
    with warnings.catch_warnings(record=True) as shown, watch_nondeterminism() as ops:
        warnings.simplefilter("always")
        for _ in range(3):
            warnings.warn(TORCH_SAYS, UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert ops == ["adaptive_avg_pool2d_backward_cuda"]
    assert len(shown) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_a_param_error(name):
    with pytest.raises(ParamError, match=rf"device = '{name}'.*no CUDA device"):
        select_device(name)


def test_auto_picks_what_is_there():
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def params_file(tmp_path, monkeypatch):
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params.update(device="cpu", threads=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield params
    torch.set_num_threads(threads)


def stage_of(body) -> types.ModuleType:
    """A stage module of the frame's contract whose `write` calls `body(ctx)`."""
    module = types.ModuleType("fragile_neurons.pipeline.probe")
    module.Settings = types.SimpleNamespace(from_params=lambda params, name: None)
    module.load = lambda ctx, settings: None
    module.run = lambda inputs, settings, progress: None
    module.write = lambda ctx, outputs: body(ctx)
    return module


def test_the_frame_records_threads_and_nondeterministic_ops(params_file):
    seen = {}

    def body(ctx: Context) -> None:
        warnings.warn(TORCH_SAYS, UserWarning, stacklevel=1)
        seen.update(ctx.runtime())

    run_stage(stage_of(body), ["mnist"])
    assert seen == {
        "device": "cpu",
        "cpu": cpu_model(),
        "threads": 1,
        "nondeterministic_ops": ["adaptive_avg_pool2d_backward_cuda"],
    }


def test_the_cpu_model_is_the_kernels_name_for_it():
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if not names:
        pytest.skip("this kernel names no CPU model in /proc/cpuinfo")
    assert cpu_model() == names[0]


def test_strict_determinism_stops_with_one_line(params_file, capsys):
    def body(ctx: Context) -> None:
        raise RuntimeError(TORCH_SAYS.replace("warn_only=True", "warn_only=False"))

    with pytest.raises(SystemExit) as stop:
        run_stage(stage_of(body), ["mnist"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "params: deterministic = 'strict' is not allowed; expected 'warn'" in err
    assert "adaptive_avg_pool2d_backward_cuda has no deterministic kernel" in err
