"""Writes tests/StableLora.Tests/Fixtures/scheduler-edge-cases/cases.json: scheduler edge cases from diffusers 0.21.4.

For every scheduler class StableLora implements (PNDM, DDIM, DDPM, Euler, Euler ancestral, DPM-Solver multistep), each
created the way a pipeline folder's scheduler is, `<Class>.from_config(config)`, from the SD 1.5 scheduler_config.json
(the tiny-sd fixture's file) with one or two keys changed, and for num_inference_steps 1, 2, 3 and 10, it records

  timesteps          scheduler.timesteps after set_timesteps(steps) (and their dtype)
  init_noise_sigma   float(scheduler.init_noise_sigma)
  sigmas             scheduler.sigmas (Euler and Euler ancestral only; not for 999 and 1000 steps)
  model_input_0      scale_model_input(initial sample, timesteps[0])
  final_sample       the sample after the whole loop
      sample = INITIAL * init_noise_sigma
      for t in timesteps:
          model_input = scale_model_input(sample, t)
          model_output = 0.1 * model_input + 0.01 * float(t) / 1000     (the scalar in float64, added to float32)
          sample = step(model_output, t, sample, generator=g).prev_sample
    with g = torch.Generator().manual_seed(SEED) created before the loop for the classes that draw noise (DDPM and
    Euler ancestral; Euler draws and discards one tensor per step), None otherwise.
  model_evaluations  the number of model calls of that loop (len(timesteps): PNDM runs one more than asked)
  final_sample_not_finite  true instead of final_sample where diffusers' loop ends in inf/NaN (zero terminal SNR with
                     epsilon prediction divides by alpha_T = 0)
  error              where diffusers raises (in from_config, set_timesteps or a step): the stage, exception type and
                     first line of its message; the fields of later stages are then absent.

The config keys varied are those SD 1.x/2.x scheduler_config.json files carry and the class reads: timestep_spacing x
steps_offset, prediction_type, beta_schedule, set_alpha_to_one, skip_prk_steps, clip_sample (+ clip_sample_range),
thresholding, rescale_betas_zero_snr, variance_type, use_karras_sigmas, interpolation_type, solver_order, solver_type,
algorithm_type, lower_order_final, lambda_min_clipped. Steps 0 and 1001 (> num_train_timesteps) record only whether
set_timesteps raises and how many timesteps it makes; steps 999 and 1000 run the loop but record only the number of
timesteps and the first three (timestep_count, first_timesteps) instead of all of them (SD's steps_offset 1 puts the
first 'leading' timestep of 1000 steps at 1000, past the training schedule).

Needs diffusers 0.21.4 (and its imports: huggingface_hub, numpy, torch). Usage, from the repository root:
  PYTHONPATH=<diffusers-0.21.4>/src:<huggingface_hub-0.17.3>/src /usr/bin/python3 tools/generate_scheduler_edge_cases.py
"""
import json
import os
import platform
import sys

import numpy as np
import torch

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

if diffusers.__version__ != "0.21.4":
    sys.exit(f"need diffusers 0.21.4, found {diffusers.__version__}")

OUT_DIR = "tests/StableLora.Tests/Fixtures/scheduler-edge-cases"
SD15_CONFIG = "tests/StableLora.Tests/Fixtures/tiny-sd/pipeline/scheduler/scheduler_config.json"
SEED = 4242
SHAPE = [1, 4, 2, 2]
# 16 fixed values in [-1.875, 1.875]: some beyond +-1, so that clip_sample matters.
INITIAL = [((i * 7) % 16 - 7.5) / 4 for i in range(16)]
STEPS = [1, 2, 3, 10]
CLASSES = {
    "PNDMScheduler": PNDMScheduler,
    "DDIMScheduler": DDIMScheduler,
    "DDPMScheduler": DDPMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}
STOCHASTIC = {"DDPMScheduler", "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler"}

COMMON = (
    [{}]
    + [{"timestep_spacing": s, "steps_offset": o} for s in ("leading", "linspace", "trailing") for o in (0, 1)]
    + [{"prediction_type": "v_prediction"}, {"prediction_type": "sample"}]
    + [{"beta_schedule": "linear"}, {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
       {"beta_schedule": "squaredcos_cap_v2"}]
)
EXTRA = {
    "PNDMScheduler": [{"set_alpha_to_one": True}, {"skip_prk_steps": False}, {"skip_prk_steps": False, "timestep_spacing": "trailing"},
                      {"skip_prk_steps": False, "prediction_type": "v_prediction"}],
    "DDIMScheduler": [{"set_alpha_to_one": True}, {"clip_sample": True}, {"clip_sample": True, "clip_sample_range": 0.5},
                      {"thresholding": True}, {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
                      {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
                      {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}],
    "DDPMScheduler": [{"clip_sample": True}, {"variance_type": "fixed_large"}, {"variance_type": "fixed_small_log"},
                      {"thresholding": True}],
    "EulerDiscreteScheduler": [{"use_karras_sigmas": True}, {"use_karras_sigmas": True, "timestep_spacing": "leading"},
                               {"interpolation_type": "log_linear"}, {"prediction_type": "v_prediction", "timestep_spacing": "leading"}],
    "EulerAncestralDiscreteScheduler": [{"prediction_type": "v_prediction", "timestep_spacing": "leading"}],
    "DPMSolverMultistepScheduler": [{"use_karras_sigmas": True}, {"solver_order": 1}, {"solver_order": 3}, {"solver_type": "heun"},
                                    {"lower_order_final": False}, {"solver_order": 3, "lower_order_final": False},
                                    {"algorithm_type": "dpmsolver"}, {"algorithm_type": "sde-dpmsolver++"},
                                    {"thresholding": True}, {"lambda_min_clipped": -5.1}, {"lambda_min_clipped": 10.0},
                                    {"use_karras_sigmas": True, "prediction_type": "v_prediction"}],
}


def f32(values):
    """Shortest decimal that reads back as the same float32."""
    return [float(np.format_float_scientific(np.float32(v), unique=True)) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def timestep_values(timesteps):
    if timesteps.dtype == torch.int64:
        return [int(t) for t in timesteps.tolist()]
    if timesteps.dtype == torch.float32:
        return f32(timesteps.numpy())
    return [float(t) for t in timesteps.tolist()]


def error_of(stage, e):
    message = str(e).strip().split("\n")[0]
    return {"stage": stage, "type": type(e).__name__, "message": message[:300]}


def run_case(class_name, overrides, steps, loop=True, summary=False):
    with open(SD15_CONFIG) as f:
        config = json.load(f)
    config.update(overrides)
    case = {"id": f"{class_name}|{json.dumps(overrides, sort_keys=True)}|{steps}", "class": class_name,
            "config": overrides, "steps": steps}
    try:
        scheduler = CLASSES[class_name].from_config(config)
    except Exception as e:  # noqa: BLE001 - recording what diffusers raises is the point
        case["error"] = error_of("from_config", e)
        return case
    try:
        scheduler.set_timesteps(steps)
    except Exception as e:  # noqa: BLE001
        case["error"] = error_of("set_timesteps", e)
        return case
    timesteps = scheduler.timesteps
    if not loop:
        case["timestep_count"] = len(timesteps)
        return case
    if summary:
        case["timestep_count"] = len(timesteps)
        case["first_timesteps"] = timestep_values(timesteps[:3])
    else:
        case["timesteps"] = timestep_values(timesteps)
    case["timesteps_dtype"] = str(timesteps.dtype).replace("torch.", "")
    case["init_noise_sigma"] = float(scheduler.init_noise_sigma)
    if class_name in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler") and not summary:
        case["sigmas"] = f32(scheduler.sigmas.numpy())
    generator = torch.Generator().manual_seed(SEED) if class_name in STOCHASTIC else None
    sample = torch.tensor(INITIAL, dtype=torch.float32).reshape(SHAPE) * scheduler.init_noise_sigma
    try:
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(sample, t)
            if i == 0:
                case["model_input_0"] = f32(model_input.numpy())
            model_output = 0.1 * model_input + 0.01 * float(t) / 1000
            kwargs = {"generator": generator} if generator is not None else {}
            sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
    except Exception as e:  # noqa: BLE001
        case["error"] = error_of("step", e)
        return case
    case["model_evaluations"] = len(timesteps)
    if torch.isfinite(sample).all():
        case["final_sample"] = f32(sample.numpy())
    else:
        case["final_sample_not_finite"] = True
    return case


def main():
    torch.set_num_threads(1)
    cases = []
    for class_name in CLASSES:
        for overrides in COMMON + EXTRA[class_name]:
            for steps in STEPS:
                cases.append(run_case(class_name, overrides, steps))
        for steps in (0, 1001):
            cases.append(run_case(class_name, {}, steps, loop=False))
        for steps in (999, 1000):
            cases.append(run_case(class_name, {}, steps, summary=True))
    with open(SD15_CONFIG) as f:
        base = json.load(f)
    document = {
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "command": "PYTHONPATH=<diffusers-0.21.4>/src:<huggingface_hub-0.17.3>/src /usr/bin/python3 tools/generate_scheduler_edge_cases.py",
        "base_config": base,
        "base_config_file": SD15_CONFIG,
        "shape": SHAPE,
        "initial_sample": INITIAL,
        "generator_seed": SEED,
        "stochastic_classes": sorted(STOCHASTIC),
        "model": "model_output = 0.1 * model_input + 0.01 * float(t) / 1000",
        "cases": cases,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        f.write("{\n")
        items = [(k, v) for k, v in document.items() if k != "cases"]
        for k, v in items:
            f.write(f" {json.dumps(k)}: {json.dumps(v)},\n")
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c) for c in cases))
        f.write("\n ]\n}\n")
    errors = sum(1 for c in cases if "error" in c)
    print(f"{len(cases)} cases ({errors} where diffusers raises)", file=sys.stderr)


if __name__ == "__main__":
    main()
