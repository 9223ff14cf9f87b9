"""fragile-neurons: nodal-dropout fragility of first-layer neurons and FGSM targeting.

Implements Pravin, Martino, Nicosia and Ojha, "Adversarial Robustness in Deep Learning: Attacks on
Fragile Neurons" (ICANN 2021) as a DVC pipeline. Every quantity is defined in method.md.

For one's own model (interface/api.py; docs/api.md: "Use it on your own model")::

    from fragile_neurons import attack_share, harden_model, scan_layer
"""

import importlib
import os

__version__ = "0.1.0"

# OpenMP's waiting threads sleep instead of spinning (GNU OpenMP, which torch's CPU kernels run
# on, reads this when torch loads, and every module of the package that imports torch is
# imported after this file). On a machine busy with other work, spinning threads of an idle
# parallel region take the cores the working ones need: a stage then ran up to 10x slower. The
# setting changes only how threads wait, never a result; a policy the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The Python API, imported on first use: `import fragile_neurons.running.config` (the check
# stage) stays free of torch, and no stage runs the API (no dependency of any stage in dvc.yaml).
API = (
    "HardeningGains",
    "LabelWarning",
    "Normalize",
    "ScanReport",
    "ShareReport",
    "attack_share",
    "harden_model",
    "scan_layer",
)
__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module(f"{__name__}.interface.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
