"""Writes tests/StableLora.Tests/Fixtures/losses/losses.json: sd-scripts' loss settings on fixed tensors.

Runs kohya-ss/sd-scripts' own code from a checkout (no copy of it lives here):

  library/train_util.py              get_huber_threshold_if_needed, conditional_loss, get_timesteps,
                                     get_noise_noisy_latents_and_timesteps
  library/custom_train_functions.py  prepare_scheduler_for_custom_training, fix_noise_scheduler_betas_for_zero_terminal_snr,
                                     apply_snr_weight, add_v_prediction_like_loss, apply_debiased_estimation, ...
  train_network.py                   NetworkTrainer.get_noise_scheduler, NetworkTrainer.post_process_loss

custom_train_functions.py is imported as a module (with a no-op stand-in for library.utils.setup_logging, which needs
torchvision and cv2). train_util.py and train_network.py import half the world at module level (accelerate,
transformers, torchvision, ...), so the functions above are taken out of the files with `ast`, verbatim, and executed
in a namespace holding what they use (torch, math, typing, the custom_train_functions module, diffusers'
DDPMScheduler); the two methods are called with self=None (neither reads self). Only the five lines of
NetworkTrainer.process_batch that chain them (train_network.py, after get_noise_pred_and_target) are restated here:

    huber_c = train_util.get_huber_threshold_if_needed(args, timesteps, noise_scheduler)
    loss = train_util.conditional_loss(noise_pred.float(), target.float(), args.loss_type, "none", huber_c)
    loss = loss.mean(dim=list(range(1, loss.ndim)))  # mean over all dims except batch
    loss = loss * loss_weights                        # all 1.0 here (no per-subset weights)
    loss = self.post_process_loss(loss, args, timesteps, noise_scheduler)
    return loss.mean()

Cases (each on the same fixed float32 model_pred and target of shape [4, 4, 4, 4], timesteps [0, 1, 250, 999]):
loss_type l2 / l1 / huber / smooth_l1 (huber_c 0.1 and 0.3, huber_schedule constant / exponential / snr), min-SNR-gamma,
v_pred_like_loss, debiased estimation, each for epsilon and v-prediction (v_parameterization), all together, and with
zero_terminal_snr (v-prediction). Each records the elementwise loss (conditional_loss), the Huber thresholds, the
per-sample loss after post_process_loss and the final mean. Besides: the noise schedule's alphas_cumprod with and
without zero_terminal_snr, and one draw of get_noise_noisy_latents_and_timesteps with ip_noise_gamma 0.1 (latents,
noise, timesteps, the input-perturbation draw, noisy latents).

Usage, from the repository root (diffusers 0.21.4 and huggingface_hub 0.17.3 on PYTHONPATH, torch 1.13):
  PYTHONPATH=<diffusers-0.21.4>/src:<huggingface_hub-0.17.3>/src /usr/bin/python3 tools/generate_loss_fixtures.py <sd-scripts checkout>
"""
import argparse
import ast
import json
import math
import os
import platform
import sys
import types
import typing

import torch

from sd_scripts_reference import commit_of, import_custom_train_functions

import diffusers
from diffusers import DDPMScheduler

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "StableLora.Tests", "Fixtures", "losses", "losses.json")


def extract(path, names, namespace, class_name=None):
    """Executes the named top-level functions (or methods of class_name) of a source file, verbatim, in namespace."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    body = tree.body
    if class_name is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    nodes = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    found = {n.name for n in nodes}
    missing = set(names) - found
    if missing:
        raise SystemExit(f"{path}: not found: {sorted(missing)}")
    module = ast.Module(body=nodes, type_ignores=[])
    exec(compile(module, path, "exec"), namespace)
    return types.SimpleNamespace(**{n: namespace[n] for n in names})


def args_for(**overrides):
    args = argparse.Namespace(
        loss_type="l2", huber_c=0.1, huber_scale=1.0, huber_schedule="snr",
        min_snr_gamma=None, scale_v_pred_loss_like_noise_pred=False, v_pred_like_loss=None, debiased_estimation_loss=False,
        v_parameterization=False, zero_terminal_snr=False,
        ip_noise_gamma=None, ip_noise_gamma_random_strength=False, noise_offset=None, noise_offset_random_strength=False,
        adaptive_noise_scale=None, multires_noise_iterations=None, multires_noise_discount=0.3, min_timestep=None, max_timestep=None,
    )
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def main():
    checkout = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LORA_ANYWHERE_SD_SCRIPTS")
    if not checkout:
        raise SystemExit("usage: generate_loss_fixtures.py <sd-scripts checkout>")
    torch.set_num_threads(1)
    ctf = import_custom_train_functions(checkout)
    util_ns = {"torch": torch, "math": math, "Optional": typing.Optional, "Tuple": typing.Tuple, "custom_train_functions": ctf}
    train_util = extract(os.path.join(checkout, "library", "train_util.py"),
                         ["get_timesteps", "get_noise_noisy_latents_and_timesteps", "get_huber_threshold_if_needed", "conditional_loss"], util_ns)
    net_ns = {"torch": torch, "Any": typing.Any, "argparse": argparse, "DDPMScheduler": DDPMScheduler, "custom_train_functions": ctf,
              "prepare_scheduler_for_custom_training": ctf.prepare_scheduler_for_custom_training,
              "apply_snr_weight": ctf.apply_snr_weight,
              "scale_v_prediction_loss_like_noise_prediction": ctf.scale_v_prediction_loss_like_noise_prediction,
              "add_v_prediction_like_loss": ctf.add_v_prediction_like_loss,
              "apply_debiased_estimation": ctf.apply_debiased_estimation}
    trainer = extract(os.path.join(checkout, "train_network.py"), ["get_noise_scheduler", "post_process_loss"], net_ns, class_name="NetworkTrainer")

    generator = torch.Generator().manual_seed(20240615)
    shape = (4, 4, 4, 4)
    model_pred = torch.randn(shape, generator=generator)
    target = torch.randn(shape, generator=generator) * 0.8 + 0.1 * model_pred
    timesteps = torch.tensor([0, 1, 250, 999], dtype=torch.int64)

    def process_batch_loss(args):
        noise_scheduler = trainer.get_noise_scheduler(None, args, torch.device("cpu"))
        # NetworkTrainer.process_batch, the lines after get_noise_pred_and_target:
        huber_c = train_util.get_huber_threshold_if_needed(args, timesteps, noise_scheduler)
        loss = train_util.conditional_loss(model_pred.float(), target.float(), args.loss_type, "none", huber_c)
        elementwise = loss
        loss = loss.mean(dim=list(range(1, loss.ndim)))
        loss_weights = torch.ones(loss.shape[0])
        loss = loss * loss_weights
        loss = trainer.post_process_loss(None, loss, args, timesteps, noise_scheduler)
        return huber_c, elementwise, loss, loss.mean()

    settings = []
    for v in (False, True):
        settings.append(dict(v_parameterization=v))
        settings.append(dict(v_parameterization=v, loss_type="l1"))
        for loss_type in ("huber", "smooth_l1"):
            for schedule in ("constant", "exponential", "snr"):
                for c in (0.1, 0.3):
                    settings.append(dict(v_parameterization=v, loss_type=loss_type, huber_schedule=schedule, huber_c=c))
        settings.append(dict(v_parameterization=v, min_snr_gamma=5.0))
        settings.append(dict(v_parameterization=v, v_pred_like_loss=0.2))
        settings.append(dict(v_parameterization=v, debiased_estimation_loss=True))
        settings.append(dict(v_parameterization=v, loss_type="huber", huber_schedule="snr", min_snr_gamma=5.0, v_pred_like_loss=0.2, debiased_estimation_loss=True))
    settings.append(dict(v_parameterization=True, zero_terminal_snr=True))
    settings.append(dict(v_parameterization=True, zero_terminal_snr=True, loss_type="huber", huber_schedule="snr", huber_c=0.1))
    settings.append(dict(v_parameterization=True, zero_terminal_snr=True, loss_type="smooth_l1", huber_schedule="exponential", huber_c=0.3,
                         min_snr_gamma=5.0, debiased_estimation_loss=True))
    settings.append(dict(v_parameterization=True, zero_terminal_snr=True, min_snr_gamma=1.0, v_pred_like_loss=0.5))

    cases = []
    for s in settings:
        args = args_for(**s)
        huber_c, elementwise, per_sample, mean = process_batch_loss(args)
        cases.append({
            "settings": s,
            "huber_c": None if huber_c is None else flat(huber_c),
            "elementwise": flat(elementwise),
            "per_sample": flat(per_sample),
            "loss": float(mean),
        })

    plain = trainer.get_noise_scheduler(None, args_for(), torch.device("cpu"))
    rescaled = trainer.get_noise_scheduler(None, args_for(zero_terminal_snr=True, v_parameterization=True), torch.device("cpu"))

    # One draw with input perturbation noise, from the global RNG as sd-scripts draws it.
    latents = torch.randn((2, 4, 4, 4), generator=generator)
    torch.manual_seed(1234)
    noise, noisy_latents, ip_timesteps = train_util.get_noise_noisy_latents_and_timesteps(args_for(ip_noise_gamma=0.1), plain, latents)
    # The same draws again, to record the perturbation sd-scripts drew (randn_like(latents) after the timesteps).
    torch.manual_seed(1234)
    again_noise = torch.randn_like(latents)
    torch.randint(0, 1000, (latents.shape[0],), device="cpu")
    ip_draw = torch.randn_like(latents)
    assert torch.equal(again_noise, noise)

    document = {
        "generator": "tools/generate_loss_fixtures.py",
        "versions": {
            "sd_scripts_commit": commit_of(checkout),
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "shape": list(shape),
        "model_pred": flat(model_pred),
        "target": flat(target),
        "timesteps": timesteps.tolist(),
        "alphas_cumprod": flat(plain.alphas_cumprod),
        "alphas_cumprod_zero_terminal_snr": flat(rescaled.alphas_cumprod),
        "all_snr_zero_terminal_snr": flat(rescaled.all_snr),
        "cases": cases,
        "ip_noise": {
            "ip_noise_gamma": 0.1,
            "shape": list(latents.shape),
            "latents": flat(latents),
            "noise": flat(noise),
            "timesteps": ip_timesteps.tolist(),
            "perturbation": flat(ip_draw),
            "noisy_latents": flat(noisy_latents),
        },
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
