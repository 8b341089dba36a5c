"""Writes tests/StableLora.Tests/Fixtures/losses/masked.json: sd-scripts' masked loss and per-image loss weights.

Runs kohya-ss/sd-scripts' own apply_masked_loss (library/custom_train_functions.py, imported as a module with no-op
stand-ins for library.utils.setup_logging and diffusers' DDPMScheduler import, neither used by that function) on fixed
float32 tensors, for both mask sources sd-scripts has:

  alpha_masks          [B, H, W] in [0, 1] (an image's alpha / 255)
  conditioning_images  [B, 3, H, W] in [-1, 1] (a mask image; sd-scripts uses channel 0, mapped to [0, 1])

and then the lines of train_network.py's process_batch that follow it, restated here:

    loss = loss.mean(dim=list(range(1, loss.ndim)))  # mean over all dims except batch
    loss = loss * loss_weights                        # prior_loss_weight for regularisation images, else 1.0

The element-wise loss is conditional_loss(..., "l2", "none"), i.e. (pred - target) ** 2, computed here.

Usage, from the repository root (torch 1.13):
  /usr/bin/python3 tools/generate_masked_loss_fixtures.py <sd-scripts checkout>
"""
import argparse
import json
import os

import torch

from sd_scripts_reference import commit_of, import_custom_train_functions

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "StableLora.Tests", "Fixtures", "losses", "masked.json")


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout")
    args = parser.parse_args()
    ctf = import_custom_train_functions(args.checkout, stub_diffusers=True)

    g = torch.Generator().manual_seed(20261204)
    batch, channels, h, w = 3, 4, 8, 8
    pixel_h, pixel_w = 16, 24  # to 8x8 latents: the area resize averages 2x3 blocks
    pred = torch.randn(batch, channels, h, w, generator=g)
    target = torch.randn(batch, channels, h, w, generator=g)
    elementwise = (pred.float() - target.float()) ** 2
    alpha = torch.rand(batch, pixel_h, pixel_w, generator=g)
    alpha[0] = 1.0  # an image without alpha: sd-scripts' RGBA conversion gives ones
    alpha[1, :, : pixel_w // 2] = 0.0  # left half transparent
    conditioning = torch.rand(batch, 3, pixel_h, pixel_w, generator=g) * 2 - 1
    loss_weights = torch.tensor([1.0, 1.0, 0.75])

    cases = []
    for name, batch_dict in (("alpha_masks", {"alpha_masks": alpha}), ("conditioning_images", {"conditioning_images": conditioning})):
        masked = ctf.apply_masked_loss(elementwise.clone(), batch_dict)
        per_sample = masked.mean(dim=list(range(1, masked.ndim)))
        weighted = per_sample * loss_weights
        cases.append({
            "source": name,
            "masked": flat(masked),
            "per_sample": flat(per_sample),
            "weighted": flat(weighted),
            "mean": float(weighted.mean()),
        })

    fixture = {
        "generator": "tools/generate_masked_loss_fixtures.py",
        "sd_scripts_commit": commit_of(args.checkout),
        "torch": torch.__version__,
        "pred_shape": [batch, channels, h, w],
        "pred": flat(pred),
        "target": flat(target),
        "alpha_shape": [batch, pixel_h, pixel_w],
        "alpha": flat(alpha),
        "conditioning_shape": [batch, 3, pixel_h, pixel_w],
        "conditioning": flat(conditioning),
        "loss_weights": flat(loss_weights),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
