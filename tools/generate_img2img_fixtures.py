"""Writes tests/StableLora.Tests/Fixtures/img2img/: seeded image-to-image runs of diffusers' StableDiffusionImg2ImgPipeline
(v0.21.4) on the tiny-sd fixture pipeline (issue 16, item 5).

Each case loads tests/StableLora.Tests/Fixtures/tiny-sd/pipeline with StableDiffusionImg2ImgPipeline.from_pretrained,
swaps in a scheduler made with <Class>.from_config(pipe.scheduler.config), and calls the pipeline with a PIL init
image, strength, steps, guidance, num_images_per_prompt and generator=torch.Generator('cpu').manual_seed(seed),
output_type='np'. Recorded per case (float32 unless noted):
  init_image      [1, 3, H, W]  image_processor.preprocess(init image) (in [-1, 1]) as the pipeline computed it
  init_latents    [N, 4, H/f, W/f] the first argument of scheduler.add_noise (VAE sample * scaling factor, repeated)
  noise           [N, 4, H/f, W/f] the noise given to scheduler.add_noise
  latent_timestep [N]           the timesteps given to scheduler.add_noise (scheduler.timesteps dtype)
  noisy_latents   [N, 4, H/f, W/f] what add_noise returned (the loop's first latents)
  timesteps       [k]           the timesteps of the shortened loop, as the pipeline iterated them
  step_latents    [k, N, ...]   latents after each step (scheduler.step's prev_sample)
  final_latents                 latents after the last step
  image           [N, H, W, 3]  output_type='np' in [0, 1]
  image_uint8     uint8         (image * 255).round(), as numpy_to_pil writes a PNG
The strength edge cases that diffusers refuses are recorded with the exception it raises, and a few PIL Lanczos resizes
of random pictures (resize.<n>.input / .output, uint8 [H, W, 3]; sizes in cases.json "resizes").

Usage, from the repository root (Debian's /usr/bin/python3 with python3-torch 1.13 and python3-pil; diffusers v0.21.4,
transformers v4.32 and huggingface_hub sources on PYTHONPATH, plus a pure-Python safetensors stand-in, as in
/work/scratch/pyref/env.sh):
  . /work/scratch/pyref/env.sh && /usr/bin/python3 tools/generate_img2img_fixtures.py
"""
import functools
import json
import os
import platform

import numpy as np
import PIL
import PIL.Image
import torch
import diffusers
import transformers
from safetensors.torch import save_file
from diffusers import (StableDiffusionImg2ImgPipeline, PNDMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, DDIMScheduler)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIPELINE = os.path.join(ROOT, "tests", "StableLora.Tests", "Fixtures", "tiny-sd", "pipeline")
OUT = os.path.join(ROOT, "tests", "StableLora.Tests", "Fixtures", "img2img")

SCHEDULERS = {
    "Pndm": PNDMScheduler,
    "DpmSolverMultistep": DPMSolverMultistepScheduler,
    "EulerAncestralDiscrete": EulerAncestralDiscreteScheduler,
    "EulerDiscrete": EulerDiscreteScheduler,
    "Ddim": DDIMScheduler,
}

PROMPT = "a red lighthouse on a rocky coast, oil painting"

CASES = [
    dict(id="pndm_s08", scheduler="Pndm", image="init_24x16.png", strength=0.8, steps=10, guidance=7.5, count=1, seed=1234,
         negative="blurry"),
    dict(id="pndm_s05", scheduler="Pndm", image="init_24x16.png", strength=0.5, steps=8, guidance=7.5, count=1, seed=99,
         negative=None),
    dict(id="dpmpp_s05", scheduler="DpmSolverMultistep", image="init_24x16.png", strength=0.5, steps=10, guidance=5.0, count=1,
         seed=7, negative="cartoon"),
    dict(id="euler_a_s08_x2", scheduler="EulerAncestralDiscrete", image="init_24x16.png", strength=0.8, steps=6, guidance=6.0,
         count=2, seed=42, negative=None),
    dict(id="euler_s1", scheduler="EulerDiscrete", image="init_24x16.png", strength=1.0, steps=5, guidance=7.5, count=1, seed=5,
         negative=None),
    dict(id="ddim_s06_odd", scheduler="Ddim", image="init_25x19.png", strength=0.6, steps=5, guidance=7.5, count=1, seed=3,
         negative=None),
]

# diffusers with int(steps * strength) == 0: an empty loop; what it does is recorded, not compared.
EDGE = [dict(id="pndm_tiny_strength", scheduler="Pndm", image="init_24x16.png", strength=0.1, steps=4, guidance=7.5, count=1,
             seed=1, negative=None),
        dict(id="ddim_tiny_strength", scheduler="Ddim", image="init_24x16.png", strength=0.1, steps=4, guidance=7.5, count=1,
             seed=1, negative=None),
        dict(id="euler_zero_strength", scheduler="EulerDiscrete", image="init_24x16.png", strength=0.0, steps=4, guidance=7.5,
             count=1, seed=1, negative=None)]


def make_images():
    """Deterministic synthetic RGB pictures: gradients, a disc and stripes (no randomness)."""
    def picture(width, height):
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        r = 255 * x / max(width - 1, 1)
        g = 255 * y / max(height - 1, 1)
        b = 128 + 127 * np.sin(x * 0.7 + y * 0.3)
        disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.3) ** 2
        r = np.where(disc, 250, r)
        g = np.where(disc, 240 - 3 * x, g)
        stripes = (x.astype(int) // 3) % 2 == 0
        b = np.where(stripes & ~disc, 30, b)
        rgb = np.stack([r, g, b], axis=-1).clip(0, 255).round().astype(np.uint8)
        return PIL.Image.fromarray(rgb, "RGB")

    images = {"init_24x16.png": picture(24, 16), "init_25x19.png": picture(25, 19)}
    for name, image in images.items():
        image.save(os.path.join(OUT, name))
    # Read back from disk so that the pipeline sees exactly the PNG's pixels.
    return {name: PIL.Image.open(os.path.join(OUT, name)).convert("RGB") for name in images}


def run_case(case, images, tensors):
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(PIPELINE, safety_checker=None, feature_extractor=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[case["scheduler"]].from_config(pipe.scheduler.config)
    record = {}

    original_preprocess = pipe.image_processor.preprocess

    def preprocess(image, *args, **kwargs):
        out = original_preprocess(image, *args, **kwargs)
        record["init_image"] = out.clone()
        return out

    pipe.image_processor.preprocess = preprocess

    original_add_noise = pipe.scheduler.add_noise

    def add_noise(original_samples, noise, timesteps):
        record["init_latents"] = original_samples.clone()
        record["noise"] = noise.clone()
        record["latent_timestep"] = timesteps.clone()
        out = original_add_noise(original_samples, noise, timesteps)
        record["noisy_latents"] = out.clone()
        return out

    pipe.scheduler.add_noise = add_noise
    # Every scheduler.step call (the pipeline's callback skips PNDM's first loop step as a "warm-up" step).
    steps_latents, step_timesteps = [], []
    original_step = pipe.scheduler.step

    # functools.wraps keeps step's signature, which the pipeline inspects to decide whether to pass the generator.
    @functools.wraps(original_step)
    def step(model_output, timestep, sample, *args, **kwargs):
        out = original_step(model_output, timestep, sample, *args, **kwargs)
        steps_latents.append(out[0].clone() if isinstance(out, tuple) else out.prev_sample.clone())
        step_timesteps.append(timestep.clone() if torch.is_tensor(timestep) else torch.tensor(timestep))
        return out

    pipe.scheduler.step = step

    generator = torch.Generator("cpu").manual_seed(case["seed"])
    result = pipe(PROMPT, image=images[case["image"]], strength=case["strength"], num_inference_steps=case["steps"],
                  guidance_scale=case["guidance"], negative_prompt=case["negative"], num_images_per_prompt=case["count"],
                  generator=generator, output_type="np")
    image = torch.from_numpy(np.ascontiguousarray(result.images)).float()
    cid = case["id"]
    for key, value in record.items():
        tensors[f"{cid}.{key}"] = value.contiguous()
    tensors[f"{cid}.timesteps"] = torch.stack(step_timesteps)
    tensors[f"{cid}.step_latents"] = torch.stack(steps_latents)
    tensors[f"{cid}.final_latents"] = steps_latents[-1].contiguous()
    tensors[f"{cid}.image"] = image
    tensors[f"{cid}.image_uint8"] = torch.from_numpy((result.images * 255).round().astype(np.uint8))
    # The instrumentation must not change the result: an uninstrumented call gives the same image bit for bit.
    plain = StableDiffusionImg2ImgPipeline.from_pretrained(PIPELINE, safety_checker=None, feature_extractor=None,
                                                           requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = SCHEDULERS[case["scheduler"]].from_config(plain.scheduler.config)
    again = plain(PROMPT, image=images[case["image"]], strength=case["strength"], num_inference_steps=case["steps"],
                  guidance_scale=case["guidance"], negative_prompt=case["negative"], num_images_per_prompt=case["count"],
                  generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="np").images
    assert np.array_equal(again, result.images), f"{cid}: the instrumented run differs from a plain one"
    return {
        **case, "prompt": PROMPT, "full_timesteps": pipe.scheduler.timesteps.tolist(),
        "loop_steps": len(steps_latents), "image_shape": list(image.shape),
        "call": (f"StableDiffusionImg2ImgPipeline.from_pretrained('pipeline'); pipe.scheduler = "
                 f"{SCHEDULERS[case['scheduler']].__name__}.from_config(pipe.scheduler.config); pipe(prompt, image=PIL "
                 f"'{case['image']}', strength={case['strength']}, num_inference_steps={case['steps']}, "
                 f"guidance_scale={case['guidance']}, negative_prompt={case['negative']!r}, "
                 f"num_images_per_prompt={case['count']}, generator=torch.Generator('cpu').manual_seed({case['seed']}), "
                 f"output_type='np')"),
    }


# PIL's Lanczos resize (what VaeImageProcessor.resize does to a PIL image): random RGB pictures, shrinking, enlarging
# and both at once; input and output uint8 [H, W, 3].
RESIZES = [((25, 19), (24, 18)), ((37, 23), (32, 16)), ((13, 11), (24, 20)), ((64, 48), (16, 40)), ((9, 30), (8, 30))]


def run_resizes(tensors):
    rng = np.random.RandomState(2024)
    for n, ((w, h), (nw, nh)) in enumerate(RESIZES):
        pixels = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        out = np.array(PIL.Image.fromarray(pixels, "RGB").resize((nw, nh), resample=PIL.Image.LANCZOS))
        tensors[f"resize.{n}.input"] = torch.from_numpy(pixels)
        tensors[f"resize.{n}.output"] = torch.from_numpy(np.ascontiguousarray(out))
    return [{"index": n, "from": list(a), "to": list(b)} for n, (a, b) in enumerate(RESIZES)]


def run_edge(case, images):
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(PIPELINE, safety_checker=None, feature_extractor=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[case["scheduler"]].from_config(pipe.scheduler.config)
    try:
        out = pipe(PROMPT, image=images[case["image"]], strength=case["strength"], num_inference_steps=case["steps"],
                   generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="np")
        return {**case, "outcome": f"no error; images of shape {list(np.asarray(out.images).shape)}"}
    except Exception as e:  # the outcome is what is recorded
        return {**case, "outcome": f"{type(e).__name__}: {e}"}


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    images = make_images()
    tensors, cases = {}, []
    for case in CASES:
        cases.append(run_case(case, images, tensors))
        print(case["id"], "done")
    edges = [run_edge(case, images) for case in EDGE]
    resizes = run_resizes(tensors)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    versions = {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                "numpy": np.__version__, "PIL": PIL.__version__, "python": platform.python_version()}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"versions": versions, "cases": cases, "edge_cases": edges, "resizes": resizes}, f, indent=1)
        f.write("\n")
    print(json.dumps(versions))
    print(json.dumps(edges, indent=1))


if __name__ == "__main__":
    main()
