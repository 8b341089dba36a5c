"""Writes tests/StableLora.Tests/Fixtures/ema/ema.json: diffusers' EMAModel on fixed parameters.

Runs diffusers' own EMAModel (src/diffusers/training_utils.py of v0.21.4, given on the command line). The module
imports `.utils` (deprecate, is_transformers_available) at its top, so the class is taken out of the file with `ast`,
verbatim, and executed in a namespace holding what it uses (torch, contextlib, copy, typing names, and stand-ins for
deprecate and is_transformers_available, which return nothing and False).

Each case tracks three float32 parameters (shapes [4, 3], [3] and [2, 2, 3, 3]) through 12 optimizer steps: before each
step the parameters move by a fixed random delta (seeded), then EMAModel.step(parameters) runs; the case records the
decay each step used (cur_decay_value) and the shadow parameters after every step.

Usage, from the repository root (torch 1.13):
  /usr/bin/python3 tools/generate_ema_fixtures.py <diffusers v0.21.4 training_utils.py>
"""
import argparse
import ast
import contextlib
import copy
import json
import os
import typing

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "StableLora.Tests", "Fixtures", "ema", "ema.json")


def load_ema_model(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EMAModel")
    namespace = {"torch": torch, "contextlib": contextlib, "copy": copy, "Any": typing.Any, "Dict": typing.Dict,
                 "Iterable": typing.Iterable, "Optional": typing.Optional, "Union": typing.Union,
                 "deprecate": lambda *a, **k: None, "is_transformers_available": lambda: False}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), path, "exec"), namespace)
    return namespace["EMAModel"]


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("training_utils")
    args = parser.parse_args()
    EMAModel = load_ema_model(args.training_utils)

    shapes = [[4, 3], [3], [2, 2, 3, 3]]
    steps = 12
    g = torch.Generator().manual_seed(20261204)
    initial = [torch.randn(*s, generator=g) for s in shapes]
    deltas = [[torch.randn(*s, generator=g) * 0.1 for s in shapes] for _ in range(steps)]

    cases = []
    for settings in ({"decay": 0.9}, {"decay": 0.999}, {"decay": 0.99, "use_ema_warmup": True},
                     {"decay": 0.9999, "use_ema_warmup": True, "power": 0.75}):
        params = [torch.nn.Parameter(p.clone()) for p in initial]
        ema = EMAModel(params, **settings)
        decays, shadows = [], []
        for step in range(steps):
            with torch.no_grad():
                for p, d in zip(params, deltas[step]):
                    p.add_(d)
            ema.step(params)
            decays.append(float(ema.cur_decay_value))
            shadows.append([flat(s) for s in ema.shadow_params])
        cases.append({"settings": settings, "decays": decays, "shadows": shadows})

    fixture = {
        "generator": "tools/generate_ema_fixtures.py",
        "reference": "diffusers v0.21.4 src/diffusers/training_utils.py EMAModel",
        "torch": torch.__version__,
        "shapes": shapes,
        "initial": [flat(p) for p in initial],
        "deltas": [[flat(d) for d in step] for step in deltas],
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
