"""Writes tests/StableLora.Tests/Fixtures/schedules/schedules.json: learning rates of diffusers 0.21.4's schedules.

For every learning-rate schedule StableLora offers (constant, constant_with_warmup, linear, cosine,
cosine_with_restarts, polynomial) and a few runs of each (10 and 37 training steps; warm-up 0, 3, or a ratio 0.1 of the
run turned into steps as kohya's sd-scripts does, int(ratio * steps); 1 and 3 cycles; power 1 and 2; lr_end 1e-7 and
2e-5), it builds torch.optim.AdamW with two parameter groups, the first at the optimizer's lr (1e-4) and the second at
its own lr (3e-5, as StableLora's text-encoder group may be), creates the schedule and records

  multipliers  scheduler.lr_lambdas[0](k) for k = 0 .. steps (the multiplier after k scheduler steps)
  lrs          scheduler.get_last_lr() after k scheduler steps, for k = 0 .. steps: one list per parameter group
               (LambdaLR's base_lr * lambda(k) in Python floats)

The schedule comes from diffusers.optimization.get_scheduler(name, optimizer, num_warmup_steps, num_training_steps,
num_cycles, power), as diffusers' training scripts call it, except for polynomial with an lr_end other than the default
1e-7: diffusers 0.21.4's get_scheduler does not pass lr_end on, so those runs call
diffusers.optimization.get_polynomial_decay_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
lr_end, power) directly ("factory" in each case says which). Steps past the end of polynomial's warm-up when warm-up
equals the run would divide by zero in diffusers and are not recorded.

Needs diffusers 0.21.4 (and its imports). Usage, from the repository root:
  PYTHONPATH=<diffusers-0.21.4>/src:<huggingface_hub-0.17.3>/src /usr/bin/python3 tools/generate_schedule_fixtures.py
"""
import json
import os
import platform
import sys
import warnings

import torch

import diffusers
from diffusers.optimization import get_polynomial_decay_schedule_with_warmup, get_scheduler

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "StableLora.Tests", "Fixtures", "schedules", "schedules.json")
BASE_LR = 1e-4
SECOND_LR = 3e-5


def warmups(steps):
    # (label, num_warmup_steps, ratio or None)
    return [("0", 0, None), ("3", 3, None), ("ratio 0.1", int(0.1 * steps), 0.1)]


def run(name, steps, warmup, ratio, cycles=None, power=None, lr_end=None):
    p1 = torch.nn.Parameter(torch.zeros(1))
    p2 = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [p1]}, {"params": [p2], "lr": SECOND_LR}], lr=BASE_LR)
    kwargs = {}
    if name == "polynomial" and lr_end is not None and lr_end != 1e-7:
        factory = "get_polynomial_decay_schedule_with_warmup"
        scheduler = get_polynomial_decay_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=steps, lr_end=lr_end, power=power)
    else:
        factory = "get_scheduler"
        if cycles is not None:
            kwargs["num_cycles"] = cycles
        if power is not None:
            kwargs["power"] = power
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps, **kwargs)

    multipliers, lrs = [], [[], []]
    limit = steps
    if name == "polynomial" and warmup == steps:
        limit = steps - 1
    for k in range(limit + 1):
        if k > 0:
            optimizer.step()
            scheduler.step()
        multipliers.append(scheduler.lr_lambdas[0](k))
        last = scheduler.get_last_lr()
        lrs[0].append(last[0])
        lrs[1].append(last[1])
    case = {
        "schedule": name,
        "factory": factory,
        "training_steps": steps,
        "warmup_steps": warmup,
        "warmup_ratio": ratio,
        "num_cycles": cycles,
        "power": power,
        "lr_end": lr_end if name == "polynomial" else None,
        "base_lrs": [BASE_LR, SECOND_LR],
        "multipliers": multipliers,
        "lrs": lrs,
    }
    return case


def main():
    cases = []
    for steps in (10, 37):
        cases.append(run("constant", steps, 0, None))
        for name in ("constant_with_warmup", "linear", "cosine"):
            for _, warmup, ratio in warmups(steps):
                cases.append(run(name, steps, warmup, ratio))
        for cycles in (1, 3):
            for _, warmup, ratio in warmups(steps):
                cases.append(run("cosine_with_restarts", steps, warmup, ratio, cycles=cycles))
        for power in (1.0, 2.0):
            for lr_end in (1e-7, 2e-5):
                for _, warmup, ratio in warmups(steps):
                    cases.append(run("polynomial", steps, warmup, ratio, power=power, lr_end=lr_end))
    # Warm-up over the whole run, and a fractional power.
    cases.append(run("linear", 10, 10, None))
    cases.append(run("cosine", 10, 10, None))
    cases.append(run("polynomial", 10, 10, None, power=1.0, lr_end=1e-7))
    cases.append(run("polynomial", 37, 5, None, power=0.5, lr_end=2e-5))
    cases.append(run("cosine_with_restarts", 37, 0, None, cycles=4))

    document = {
        "generator": "tools/generate_schedule_fixtures.py",
        "versions": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        # repr-exact floats: json writes Python's shortest round-tripping repr.
        json.dump(document, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    warnings.simplefilter("error")
    main()
