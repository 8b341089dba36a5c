#!/usr/bin/python3
"""Writes tests/StableLora.Tests/Fixtures/optimizers/: what the reference optimizers do to a fixed set of tensors.

Run with Debian's python3-torch 1.13 (/usr/bin/python3), outside the repository's own code paths:

    /usr/bin/python3 tools/generate_optimizer_fixtures.py --references /work/scratch/optref \
        --out tests/StableLora.Tests/Fixtures/optimizers

--references is a folder holding the reference sources as single files (they are loaded by path, not installed):
    prodigy.py                    konstmish/prodigy, prodigyopt/prodigy.py
    lion_pytorch.py               lucidrains/lion-pytorch, lion_pytorch/lion_pytorch.py
    transformers_optimization.py  huggingface/transformers, src/transformers/optimization.py
SGD is torch.optim.SGD of the running torch. The commits used are recorded in the fixture README.

Every case runs two parameter groups over ten steps of stored gradients with a stored per-step learning rate per group
and records the parameters, the optimizer state and the scalar state (Prodigy's d, Adafactor's own learning rate) after
steps 1, 2 and 10.
"""

import argparse
import importlib.util
import json
import math
import os
import struct
import sys
import types

import torch

STEPS = 10
CHECKPOINTS = (1, 2, 10)

# name, shape, group, zero-initialised (LoRA up weights start at zero)
PARAMETERS = [
    ("g0.down", (4, 6), 0, False),
    ("g0.up", (5, 4), 0, True),
    ("g0.bias", (7,), 0, False),
    ("g1.down", (2, 3, 2, 2), 1, False),
    ("g1.up", (3, 2, 1, 1), 1, True),
]


def load_module(name, path, stubs=None):
    for stub_name, stub in (stubs or {}).items():
        sys.modules[stub_name] = stub
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def transformers_stubs():
    """optimization.py imports a few transformers helpers that Adafactor does not use (require_version aside)."""
    package = types.ModuleType("tfstub")
    package.__path__ = []
    trainer_utils = types.ModuleType("tfstub.trainer_utils")

    class SchedulerType:
        LINEAR = "linear"
        COSINE = "cosine"
        COSINE_WITH_RESTARTS = "cosine_with_restarts"
        POLYNOMIAL = "polynomial"
        CONSTANT = "constant"
        CONSTANT_WITH_WARMUP = "constant_with_warmup"
        INVERSE_SQRT = "inverse_sqrt"
        REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"

    trainer_utils.SchedulerType = SchedulerType
    utils = types.ModuleType("tfstub.utils")
    utils.__path__ = []

    class _Logging:
        @staticmethod
        def get_logger(name):
            import logging
            return logging.getLogger(name)

    utils.logging = _Logging()
    versions = types.ModuleType("tfstub.utils.versions")
    versions.require_version = lambda *a, **k: None
    utils.versions = versions
    return {"tfstub": package, "tfstub.trainer_utils": trainer_utils, "tfstub.utils": utils, "tfstub.utils.versions": versions}


def initial_tensors():
    generator = torch.Generator().manual_seed(20261204)
    params = {}
    for name, shape, _, zero in PARAMETERS:
        params[name] = torch.zeros(shape) if zero else torch.randn(shape, generator=generator) * 0.5
    # Gradients keep a fixed direction plus noise, so that the adaptive step sizes grow over the ten steps.
    grads = {}
    for name, shape, _, _ in PARAMETERS:
        direction = torch.randn(shape, generator=generator)
        for step in range(1, STEPS + 1):
            grads[(name, step)] = direction + 0.5 * torch.randn(shape, generator=generator)
    return params, grads


def learning_rates(base, step):
    """A warm-up and decay shape, so that the per-step learning rate changes (as an external schedule would)."""
    multiplier = min(1.0, step / 3.0) * (1.0 - 0.04 * (step - 1))
    return [b * multiplier for b in base]


def build(case, refs, params):
    kind = case["optimizer"]
    args = dict(case["args"])
    groups = [[params[n] for n, _, g, _ in PARAMETERS if g == i] for i in range(2)]
    base = case["lrs"]
    if kind == "prodigy":
        return refs["prodigy"].Prodigy([{"params": groups[0], "lr": base[0]}, {"params": groups[1], "lr": base[1]}], **args)
    if kind == "lion":
        return refs["lion"].Lion([{"params": groups[0], "lr": base[0]}, {"params": groups[1], "lr": base[1]}], **args)
    if kind == "sgd":
        return torch.optim.SGD([{"params": groups[0], "lr": base[0]}, {"params": groups[1], "lr": base[1]}], lr=base[0], nesterov=True, **args)
    if kind == "adafactor":
        if args.get("relative_step", True):
            return refs["adafactor"].Adafactor([{"params": groups[0]}, {"params": groups[1]}], lr=None, **args)
        return refs["adafactor"].Adafactor([{"params": groups[0], "lr": base[0]}, {"params": groups[1], "lr": base[1]}], **args)
    raise ValueError(kind)


def as_float(value):
    return float(value.item()) if torch.is_tensor(value) else float(value)


def run_case(case, refs, tensors):
    params0, grads = initial_tensors()
    params = {n: torch.nn.Parameter(p.clone()) for n, p in params0.items()}
    optimizer = build(case, refs, params)
    record = {"scalars": {}}
    for step in range(1, STEPS + 1):
        lrs = learning_rates(case["lrs"], step)
        if not (case["optimizer"] == "adafactor" and case["args"].get("relative_step", True)):
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr
        for name, p in params.items():
            p.grad = None if step in case.get("missing", {}).get(name, []) else grads[(name, step)].clone()
        optimizer.step()
        if step not in CHECKPOINTS:
            continue
        prefix = f"{case['name']}.step{step}"
        for name, p in params.items():
            tensors[f"{prefix}.param.{name}"] = p.detach().clone()
            for key, value in optimizer.state[p].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"{prefix}.state.{name}.{key}"] = value.detach().clone().reshape(-1)
                elif torch.is_tensor(value) and key == "p0":
                    tensors[f"{prefix}.state.{name}.{key}"] = torch.zeros(p.numel())  # the reference's zero scalar for all-zero parameters
        scalars = {}
        if case["optimizer"] == "prodigy":
            g = optimizer.param_groups[0]
            scalars = {"d": g["d"], "d_max": g["d_max"], "d_numerator": as_float(g["d_numerator"]), "k": g["k"],
                       "effective_lrs": [gr["d"] * gr["lr"] for gr in optimizer.param_groups]}
        elif case["optimizer"] == "adafactor":
            first = [optimizer.state[g["params"][0]] for g in optimizer.param_groups]
            scalars = {"effective_lrs": [as_float(optimizer._get_lr(g, s)) for g, s in zip(optimizer.param_groups, first)],
                       "rms": {n: as_float(optimizer.state[p]["RMS"]) for n, p in params.items() if "RMS" in optimizer.state[p]}}
        else:
            scalars = {"effective_lrs": [g["lr"] for g in optimizer.param_groups]}
        record["scalars"][str(step)] = scalars
    return record


MISSING = {"g0.bias": [1, 2], "g1.up": [5]}

CASES = [
    {"name": "prodigy_default", "optimizer": "prodigy", "args": {}, "lrs": [1.0, 1.0]},
    {"name": "prodigy_coupled", "optimizer": "prodigy", "lrs": [1.0, 1.0],
     "args": {"decouple": False, "weight_decay": 0.01, "use_bias_correction": True, "d_coef": 2.0}},
    {"name": "prodigy_safeguard", "optimizer": "prodigy", "lrs": [1.0, 0.0],
     "args": {"safeguard_warmup": True, "weight_decay": 0.1, "use_bias_correction": True, "betas": (0.9, 0.99), "beta3": 0.98,
              "growth_rate": 1.5, "d0": 1e-7, "eps": 1e-6}},
    {"name": "adafactor_relative", "optimizer": "adafactor", "args": {}, "lrs": [0.0, 0.0]},
    {"name": "adafactor_warmup_init", "optimizer": "adafactor", "lrs": [0.0, 0.0],
     "args": {"warmup_init": True, "beta1": 0.9, "weight_decay": 0.01}},
    {"name": "adafactor_fixed_lr", "optimizer": "adafactor", "lrs": [1e-2, 5e-3],
     "args": {"relative_step": False, "scale_parameter": False, "clip_threshold": 0.5, "decay_rate": -0.5}},
    {"name": "adafactor_fixed_lr_scaled", "optimizer": "adafactor", "lrs": [1e-2, 5e-3],
     "args": {"relative_step": False, "scale_parameter": True, "beta1": 0.8, "weight_decay": 0.05}},
    {"name": "lion_default", "optimizer": "lion", "args": {}, "lrs": [1e-3, 4e-4]},
    {"name": "lion_weight_decay", "optimizer": "lion", "args": {"weight_decay": 0.1, "betas": (0.95, 0.98)}, "lrs": [1e-3, 4e-4]},
    {"name": "sgd_nesterov", "optimizer": "sgd", "args": {"momentum": 0.9}, "lrs": [0.1, 0.03]},
    {"name": "sgd_nesterov_weight_decay", "optimizer": "sgd", "args": {"momentum": 0.8, "weight_decay": 0.01}, "lrs": [0.1, 0.03]},
    # A parameter without a gradient (p.grad is None) is skipped, its state untouched: g0.bias has none in steps 1 and 2
    # (so its state starts late) and g1.up none in step 5.
    {"name": "prodigy_missing_grads", "optimizer": "prodigy", "args": {"weight_decay": 0.01}, "lrs": [1.0, 1.0], "missing": MISSING},
    {"name": "adafactor_missing_grads", "optimizer": "adafactor", "args": {"beta1": 0.9}, "lrs": [0.0, 0.0], "missing": MISSING},
    {"name": "lion_missing_grads", "optimizer": "lion", "args": {"weight_decay": 0.1}, "lrs": [1e-3, 4e-4], "missing": MISSING},
    {"name": "sgd_missing_grads", "optimizer": "sgd", "args": {"momentum": 0.9, "weight_decay": 0.01}, "lrs": [0.1, 0.03], "missing": MISSING},
]


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        data = tensors[name].contiguous().to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--references", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    torch.set_num_threads(1)
    refs = {
        "prodigy": load_module("prodigy_reference_file", os.path.join(options.references, "prodigy.py")),
        "lion": load_module("lion_reference_file", os.path.join(options.references, "lion_pytorch.py")),
        "adafactor": load_module("tfstub.optimization", os.path.join(options.references, "transformers_optimization.py"), transformers_stubs()),
    }
    params0, grads = initial_tensors()
    tensors = {}
    for name, p in params0.items():
        tensors[f"init.{name}"] = p
    for (name, step), g in grads.items():
        tensors[f"grad{step}.{name}"] = g
    cases = []
    for case in CASES:
        record = run_case(case, refs, tensors)
        cases.append({
            "name": case["name"], "optimizer": case["optimizer"],
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in case["args"].items()},
            "base_lrs": case["lrs"],
            "missing": case.get("missing", {}),
            "lrs": {str(s): learning_rates(case["lrs"], s) for s in range(1, STEPS + 1)},
            "scalars": record["scalars"],
        })
    document = {
        "torch": torch.__version__,
        "steps": STEPS,
        "checkpoints": list(CHECKPOINTS),
        "parameters": [{"name": n, "shape": list(s), "group": g} for n, s, g, _ in PARAMETERS],
        "cases": cases,
    }
    os.makedirs(options.out, exist_ok=True)
    write_safetensors(os.path.join(options.out, "optimizers.safetensors"), tensors)
    with open(os.path.join(options.out, "optimizers.json"), "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
