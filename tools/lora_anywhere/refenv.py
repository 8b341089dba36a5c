"""Reference-environment helpers for make_fixtures.py.

Nothing here computes a fixture value by itself: it sets up torch the way the tiny-sd fixtures were made, imports
sd-scripts' networks/lora.py and LyCORIS from their checkouts (stubbing the two sd-scripts `library` modules that
lora.py imports only for logging and an SDXL type check), loads the tiny-sd pipeline and renders its seeded case.
"""
import contextlib
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------ torch set-up


def setup_torch():
    """1 CPU thread (the tiny-sd fixtures were computed with 1 thread) and zeros for the ignored baddbmm input.

    diffusers' Attention.get_attention_scores calls torch.baddbmm(torch.empty(...), q, k^T, beta=0): the Debian
    torch 1.13 build propagates inf/nan from that uninitialised buffer although beta is 0 (see tiny-sd README,
    "Reproducing"). Replacing the ignored input by zeros does not change any correct result.
    """
    torch.set_num_threads(1)
    if getattr(torch.baddbmm, "_lora_anywhere_patched", False):
        return
    original = torch.baddbmm

    def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
        if beta == 0:
            input = torch.zeros_like(input)
        if out is not None:
            return original(input, batch1, batch2, beta=beta, alpha=alpha, out=out)
        return original(input, batch1, batch2, beta=beta, alpha=alpha)

    baddbmm._lora_anywhere_patched = True
    torch.baddbmm = baddbmm


# ------------------------------------------------------------------------------------------------ reference imports


def import_sd_scripts_lora(sd_scripts_dir):
    """networks/lora.py of kohya-ss/sd-scripts, imported as module `sd_scripts_lora`.

    lora.py imports `library.utils.setup_logging` (library/utils.py needs torchvision and cv2) and
    `library.sdxl_original_unet.SdxlUNet2DConditionModel` (used only in an issubclass() test for SDXL). Both are
    replaced by stand-ins: a no-op setup_logging and an empty nn.Module subclass, so the SD1 paths are untouched.
    """
    if "sd_scripts_lora" in sys.modules:
        return sys.modules["sd_scripts_lora"]
    library = types.ModuleType("library")
    library.__path__ = []
    utils = types.ModuleType("library.utils")
    utils.setup_logging = lambda *a, **k: None
    sdxl = types.ModuleType("library.sdxl_original_unet")

    class SdxlUNet2DConditionModel(torch.nn.Module):  # stand-in: never instantiated
        pass

    sdxl.SdxlUNet2DConditionModel = SdxlUNet2DConditionModel
    library.utils = utils
    library.sdxl_original_unet = sdxl
    sys.modules.update({"library": library, "library.utils": utils, "library.sdxl_original_unet": sdxl})
    spec = importlib.util.spec_from_file_location("sd_scripts_lora", os.path.join(sd_scripts_dir, "networks", "lora.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["sd_scripts_lora"] = module
    spec.loader.exec_module(module)
    return module


def import_lycoris(lycoris_dir):
    if lycoris_dir not in sys.path:
        sys.path.insert(0, lycoris_dir)
    import lycoris  # noqa: F401
    import lycoris.kohya

    return lycoris.kohya


@contextlib.contextmanager
def diffusers_layers_named_like_torch():
    """sd-scripts matches layers by class *name* ("Linear", "Conv2d"). Its own SD1 U-Net (library/original_unet.py)
    uses plain torch layers with the same module paths as diffusers; diffusers 0.21.4 uses the subclasses
    LoRACompatibleLinear / LoRACompatibleConv, which lora.py would skip. While this context is active those two
    classes report the torch names, so create_network sees the module tree sd-scripts sees with its own U-Net."""
    from diffusers.models.lora import LoRACompatibleConv, LoRACompatibleLinear

    saved = (LoRACompatibleLinear.__name__, LoRACompatibleConv.__name__)
    LoRACompatibleLinear.__name__, LoRACompatibleConv.__name__ = "Linear", "Conv2d"
    try:
        yield
    finally:
        LoRACompatibleLinear.__name__, LoRACompatibleConv.__name__ = saved


def git_commit(checkout_dir):
    """Commit id recorded beside a checkout (file COMMIT), or None."""
    path = os.path.join(checkout_dir, "COMMIT")
    if os.path.exists(path):
        return open(path).read().strip()
    return None


# ------------------------------------------------------------------------------------------------ pipeline


SEEDED_CASE_ID = "seeded_pndm"


def load_pipeline(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(tiny_sd_dir, "pipeline"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded_case(tiny_sd_dir):
    cases = json.load(open(os.path.join(tiny_sd_dir, "expected", "cases.json")))["cases"]
    case = [c for c in cases if c["id"] == SEEDED_CASE_ID][0]
    assert case["scheduler"] == "PNDMScheduler" and case["cross_attention_kwargs"] is None
    return case


def render(pipe, case, latents=None):
    """The call of tiny-sd case `seeded_pndm` (exactly; `latents` only for the float64 noise estimate)."""
    from diffusers import PNDMScheduler

    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    kwargs = dict(
        negative_prompt=case["negative_prompt"],
        height=None,
        width=None,
        num_inference_steps=case["num_inference_steps"],
        guidance_scale=case["guidance_scale"],
        num_images_per_prompt=case["num_images_per_prompt"],
        generator=torch.Generator("cpu").manual_seed(case["seed"]),
        output_type="np",
    )
    if latents is not None:
        kwargs["latents"] = latents
    with torch.no_grad():
        images = pipe(case["prompt"], **kwargs).images
    return np.asarray(images)
