#!/usr/bin/env python3
"""Writes tests/StableLora.Tests/Fixtures/lora-anywhere: LoRA / LyCORIS files for the tiny-sd pipeline made by the
reference trainers' own network code, the dense weight deltas the reference computes from them, images rendered from
the merged pipelines, and one kohya training step.

  kohya_locon_te   sd-scripts networks/lora.py create_network(dim 4, alpha 2, conv_dim 2, conv_alpha 1), U-Net + CLIP
  loha             LyCORIS algo=loha (same targets and dims); the 3x3 convs of ResnetBlock2D use_tucker (hada_t1/hada_t2)
                   through a preset module_algo_map, those of Downsample2D/Upsample2D do not
  lokr             LyCORIS algo=lokr (full lokr_w1; lokr_w2 full or lokr_w2_a/lokr_w2_b, as LyCORIS decides)
  lora_dora        LyCORIS algo=locon, dora_wd=True (current default wd_on_output=True: dora_scale [out, 1, ...])
  lora_dora_in     LyCORIS algo=locon, dora_wd=True, wd_on_output=False (the layout before LyCORIS 2025-04: [1, in, ...])
  kohya_step       one training step of the kohya_locon_te network (U-Net + text encoder, AdamW, two lr groups)

Every value comes from running sd-scripts / LyCORIS / diffusers / transformers; this script only draws the seeded
random factors, calls those packages and writes what they return. See the README in the output folder.

Usage (reference environment described in the README):
  source /work/scratch/pyref/env.sh
  /usr/bin/python3 tools/lora_anywhere/make_fixtures.py --out tests/StableLora.Tests/Fixtures/lora-anywhere
"""
import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import refenv  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

NETWORK_DIM = 4
NETWORK_ALPHA = 2.0
CONV_DIM = 2
CONV_ALPHA = 1.0
CONV_DIM_ARG, CONV_ALPHA_ARG = "2", "1"  # as --network_args "conv_dim=2" "conv_alpha=1" hands them over (strings)
# Relative size of every module's delta: RMS(dW at multiplier 1) = REL * RMS(W) of the layer it modifies.
REL = {"unet": 0.3, "te": 0.3}
DORA_SCALE_JITTER = 0.1  # dora_scale *= 1 + 0.1 * randn: magnitudes move too, not only directions
SEEDS = {"kohya_locon_te": 1001, "loha": 1002, "lokr": 1004, "lora_dora": 1005, "lora_dora_in": 1006}
PROBE_SEED = 7000  # probe vector of length n: randn(n, generator seeded PROBE_SEED + n)
DENSE_DELTA_MAX_ELEMENTS = 10000  # dense dW stored for the smallest module of each kind up to this size (see README)
SCALES = [("unet1.0_te1.0", 1.0, 1.0), ("unet0.5_te0.7", 0.5, 0.7)]
TRAIN = {"unet_lr": 1e-3, "text_encoder_lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}

# Restricts LyCORIS to the module classes sd-scripts' networks/lora.py targets (its default "full" preset also adds
# conv_in, conv_out and time_embedding.linear_1/2 of the U-Net).
KOHYA_TARGETS_PRESET = """\
enable_conv = true
unet_target_module = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"]
unet_target_name = []
text_encoder_target_module = ["CLIPAttention", "CLIPMLP"]
text_encoder_target_name = []
"""
PRESETS = {
    "kohya-targets.toml": KOHYA_TARGETS_PRESET + "[module_algo_map]\n",
    "kohya-targets-tucker-resnets.toml": KOHYA_TARGETS_PRESET + "[module_algo_map.ResnetBlock2D]\nalgo = \"loha\"\nuse_tucker = true\n",
}

LYCORIS_FILES = {
    "loha": {"algo": "loha", "preset": "kohya-targets-tucker-resnets.toml"},
    "lokr": {"algo": "lokr"},
    "lora_dora": {"algo": "locon", "dora_wd": "True"},
    "lora_dora_in": {"algo": "locon", "dora_wd": "True", "wd_on_output": "False"},
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------------------------------------------ small utilities


def rms(t):
    return t.double().pow(2).mean().sqrt().item()


def max_abs(a, b):
    a = torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
    b = torch.as_tensor(np.asarray(b)) if not isinstance(b, torch.Tensor) else b
    return (a.double() - b.double()).abs().max().item()


def save_safetensors(path, tensors, metadata=None):
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, path, metadata)
    return os.path.getsize(path)


def load_safetensors(path):
    from safetensors.torch import load_file, safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    return load_file(path), meta


def sshs_hashes(tensors, metadata):
    """sd-scripts train_util.precalculate_safetensors_hashes, restated: sha256 of the data section (after the
    header) of the file the tensors and the ss_* metadata make, and the legacy additional-networks hash (sha256 of
    64 KiB at offset 1 MiB, first 8 hex digits)."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous() for k, v in tensors.items()},
                {k: v for k, v in metadata.items() if k.startswith("ss_")})
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest(), hashlib.sha256(data[0x100000:0x100000 + 0x10000]).hexdigest()[:8]


def ss_metadata(module, network_args, comment, extra=None):
    """The ss_* keys sd-scripts' train_network.py writes that describe the network (values as strings, as it writes
    them: str(v)); sshs_* hashes as its save_weights adds them."""
    md = {
        "ss_network_module": module,
        "ss_network_dim": str(NETWORK_DIM),
        "ss_network_alpha": str(NETWORK_ALPHA),
        "ss_network_args": json.dumps(network_args),
        "ss_network_dropout": "None",
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_mixed_precision": "no",
        "ss_output_name": comment[0],
        "ss_training_comment": comment[1],
    }
    md.update(extra or {})
    return md


def finish_metadata(tensors, md):
    md = dict(md)
    md["sshs_model_hash"], md["sshs_legacy_hash"] = sshs_hashes(tensors, md)
    return md


def lora_name_map(pipe):
    """lora_name -> (part, module path, module) for every module of the U-Net (lora_unet_) and text encoder (lora_te_)."""
    out = {}
    for part, prefix, root in (("unet", "lora_unet", pipe.unet), ("te", "lora_te", pipe.text_encoder)):
        for path, module in root.named_modules():
            if path:
                out[(prefix + "." + path).replace(".", "_")] = (part, path, module)
    return out


def layer_kind(module):
    if isinstance(module, torch.nn.Conv2d):
        return "conv%dx%d" % tuple(module.kernel_size)
    return "linear"


def parent_class(root, path):
    """(class name of the nearest ancestor of `path` whose class is a reference target, path below it)."""
    targets = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D", "CLIPAttention", "CLIPMLP")
    parts = path.split(".")
    found = (None, path)
    for i in range(1, len(parts)):
        m = root.get_submodule(".".join(parts[:i]))
        if m.__class__.__name__ in targets:
            found = (m.__class__.__name__, ".".join(parts[i:]))
    return found


def probe(n):
    return torch.randn(n, generator=torch.Generator().manual_seed(PROBE_SEED + n), dtype=torch.float32)


def write_deltas(path, rows, stored32, ref64, what):
    """Dense tensors (float32, as the reference computed them) for the smallest module of each (part, parent class,
    layer kind) up to DENSE_DELTA_MAX_ELEMENTS elements (the first in network order among equals), and for every module `<prefix>.probe` =
    T.reshape(out, -1) @ probe(in*kh*kw) computed in float64 from the float64 reference T (stored as float32), with the
    probe vectors under `probe/<n>`."""
    dense, best = {}, {}
    for r in rows:
        n = int(np.prod(r["weight_shape"]))
        key = (r["part"], r["parent"], r["layer"])
        if n <= DENSE_DELTA_MAX_ELEMENTS and (key not in best or n < best[key][1]):
            best[key] = (r["prefix"], n)
    for prefix, _ in best.values():
        dense[prefix] = stored32[prefix].float().contiguous()
    tensors = dict(dense)
    probe_err = 0.0
    for r in rows:
        t64 = ref64[r["prefix"]].double().reshape(r["weight_shape"][0], -1)
        n = t64.shape[1]
        pv = probe(n)
        tensors["probe/%d" % n] = pv
        tensors[r["prefix"] + ".probe"] = (t64 @ pv.double()).float()
        p32 = stored32[r["prefix"]].float().reshape(r["weight_shape"][0], -1) @ pv
        probe_err = max(probe_err, max_abs(p32, t64 @ pv.double()))
    size = save_safetensors(path, tensors, {"format": what + "; dense for a subset, .probe for every module (README)"})
    return size, sorted(dense), probe_err


# ------------------------------------------------------------------------------------------------ seeded factors


def up_side(kind, lora):
    """The factors scaled to set a module's delta size (the others stay standard normal)."""
    if kind in ("kohya", "locon"):
        return [(lora.lora_up.weight, 1.0)]
    if kind == "loha":
        return [(lora.hada_w1_a, 0.5), (lora.hada_w2_a, 0.5)]  # dW is bilinear in (w1a, w2a): sqrt of the factor each
    if kind == "lokr":
        return [(lora.lokr_w1 if lora.use_w1 else lora.lokr_w1_a, 1.0)]
    raise ValueError(kind)


def forward_delta(kind, lora):
    """dW at multiplier 1 as the module's forward applies it (before DoRA's re-normalisation)."""
    if kind == "kohya":  # sd-scripts LoRAModule.forward: up(down(x)) * scale
        up, down = lora.lora_up.weight, lora.lora_down.weight
        w = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        shape = (up.shape[0], down.shape[1], *down.shape[2:])
        return w.reshape(shape) * lora.scale
    if kind == "locon":
        return lora.make_weight() * lora.scale
    return lora.get_weight(lora.shape)  # LoHa / LoKr: get_weight already includes alpha/dim


@torch.no_grad()
def seed_factors(kind, loras, names, gen, rel):
    """Every parameter of every module (network order; not the base layer a LoRAModule holds) = randn(generator); then the up-side factors of each module are
    rescaled so that RMS(dW) = rel[part] * RMS(W). dora_scale (initialised by LyCORIS to the norms of W) is multiplied
    by 1 + DORA_SCALE_JITTER * randn."""
    info = {}
    for lora in loras:
        part, path, module = names[lora.lora_name]
        for pname, p in lora.named_parameters():
            if pname.startswith("org_module."):  # sd-scripts' LoRAModule holds the base layer until apply_to()
                continue
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if pname == "dora_scale":
                p.mul_(1.0 + DORA_SCALE_JITTER * r)
            else:
                p.copy_(r)
        w = module.weight.detach()
        factor = rel[part] * rms(w) / rms(forward_delta(kind, lora))
        for p, power in up_side(kind, lora):
            p.mul_(factor ** power)
        info[lora.lora_name] = rms(forward_delta(kind, lora)) / rms(w)
    return info


# ------------------------------------------------------------------------------------------------ networks


class Refs:
    def __init__(self, args):
        self.args = args
        self.case = refenv.seeded_case(args.tiny_sd)
        self.sd_scripts = refenv.import_sd_scripts_lora(args.sd_scripts)
        self.lycoris_kohya = refenv.import_lycoris(args.lycoris)
        self.tmp = tempfile.mkdtemp(prefix="lora_anywhere_")
        for preset, text in PRESETS.items():
            with open(os.path.join(self.tmp, preset), "w") as f:
                f.write(text)

    def fresh_pipe(self):
        return refenv.load_pipeline(self.args.tiny_sd)

    def kohya_network(self, pipe):
        with refenv.diffusers_layers_named_like_torch():
            return self.sd_scripts.create_network(
                1.0, NETWORK_DIM, NETWORK_ALPHA, pipe.vae, pipe.text_encoder, pipe.unet,
                conv_dim=CONV_DIM_ARG, conv_alpha=CONV_ALPHA_ARG)

    def lycoris_network(self, pipe, extra):
        kwargs = {"conv_dim": CONV_DIM_ARG, "conv_alpha": CONV_ALPHA_ARG, "preset": "kohya-targets.toml"}
        kwargs.update(extra)
        kwargs["preset"] = os.path.join(self.tmp, kwargs["preset"])  # the preset files hold only literal settings
        return self.lycoris_kohya.create_network(1.0, NETWORK_DIM, NETWORK_ALPHA, pipe.vae, pipe.text_encoder,
                                                 pipe.unet, **kwargs)


def apply_kohya_runtime(network, text_encoder, unet):
    """network.apply_to(), then let the replaced forwards accept (and ignore) the `scale` argument diffusers 0.21.4
    passes to its LoRA-compatible layers (always 1.0 here); sd-scripts' own U-Net calls them with x only."""
    pairs = [(lora, lora.org_module) for lora in network.text_encoder_loras + network.unet_loras]
    network.apply_to(text_encoder, unet, True, True)
    for lora, module in pairs:
        module.forward = (lambda f: (lambda x, *a, **k: f(x)))(lora.forward)


def module_table(loras, names, pipe, kind):
    rows = []
    for lora in loras:
        part, path, module = names[lora.lora_name]
        root = pipe.unet if part == "unet" else pipe.text_encoder
        parent, role = parent_class(root, path)
        row = {"prefix": lora.lora_name, "part": part, "module": path, "parent": parent, "role": role,
               "layer": layer_kind(module), "weight_shape": list(module.weight.shape)}
        row.update(rank=lora.lora_dim, alpha=float(lora.alpha), scale=float(lora.scale))
        if kind != "kohya":
            if kind == "lokr":
                row.update(lokr_w1="full" if lora.use_w1 else "w1_a@w1_b",
                           lokr_w2="full" if lora.use_w2 else ("tucker" if lora.tucker else "w2_a@w2_b"))
            if kind == "loha":
                row.update(tucker=bool(lora.tucker))
        rows.append(row)
    return rows


def counts(rows):
    out = {}
    for r in rows:
        key = "%s %s %s" % (r["part"], r["parent"], r["layer"])
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def variant_counts(rows):
    """Counts of (layer kind, rank, alpha, scale[, LoKr w1/w2 form | LoHa tucker])."""
    out = {}
    for r in rows:
        key = "%s rank=%d alpha=%g scale=%g" % (r["layer"], r["rank"], r["alpha"], r["scale"])
        if "lokr_w1" in r:
            key += " w1=%s w2=%s" % (r["lokr_w1"], r["lokr_w2"])
        if "tucker" in r:
            key += " tucker=%s" % r["tucker"]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------------ merging / rendering


def merged_state(base_sd, deltas64, names, part, scale, dora=None):
    """W64 = W.double() + scale * dW64 (DoRA: LyCORIS's apply_weight_decompose(W + dW, scale) in float64), cast to
    float32."""
    sd = dict(base_sd)
    for prefix, d in deltas64.items():
        p, path, _ = names[prefix]
        if p != part:
            continue
        key = path + ".weight"
        w64 = base_sd[key].double()
        if dora is not None:
            merged = dora[prefix](w64 + d, scale)
        else:
            merged = w64 + scale * d
        sd[key] = merged.to(torch.float32)
    return sd


class Renderer:
    def __init__(self, refs):
        self.refs = refs
        self.pipe = refs.fresh_pipe()
        self.base_unet = {k: v.clone() for k, v in self.pipe.unet.state_dict().items()}
        self.base_te = {k: v.clone() for k, v in self.pipe.text_encoder.state_dict().items()}
        self.names = lora_name_map(self.pipe)
        exp, _ = load_safetensors(os.path.join(refs.args.tiny_sd, "expected", "seeded.safetensors"))
        self.expected_base = exp["seeded_pndm.image"]
        self.initial_latents = exp["seeded_pndm.initial_latents"]

    def image(self, unet_sd=None, te_sd=None):
        self.pipe.unet.load_state_dict(unet_sd or self.base_unet)
        self.pipe.text_encoder.load_state_dict(te_sd or self.base_te)
        try:
            return refenv.render(self.pipe, self.refs.case)
        finally:
            self.pipe.unet.load_state_dict(self.base_unet)
            self.pipe.text_encoder.load_state_dict(self.base_te)

    def image64(self, deltas64, su, st, dora=None):
        """Same render with U-Net, VAE and text encoder in float64, merged weights not rounded to float32, and the
        case's recorded initial latents: the float32 rounding noise of an image."""
        pipe = self.pipe
        pipe.unet.double()
        pipe.vae.double()
        pipe.text_encoder.double()
        try:
            for part, module, base in (("unet", pipe.unet, self.base_unet), ("te", pipe.text_encoder, self.base_te)):
                sd = {k: (v.double() if v.is_floating_point() else v) for k, v in base.items()}
                s = su if part == "unet" else st
                for prefix, d in deltas64.items():
                    p, path, _ = self.names[prefix]
                    if p == part:
                        w = sd[path + ".weight"]
                        sd[path + ".weight"] = dora[prefix](w + d, s) if dora is not None else w + s * d
                module.load_state_dict(sd)
            te_forward = pipe.text_encoder.forward

            def te_forward64(*a, **k):  # transformers builds its causal mask with torch.full(finfo(float64).min) in
                saved = torch.get_default_dtype()  # the default dtype: float64 default while the encoder runs
                torch.set_default_dtype(torch.float64)
                try:
                    return te_forward(*a, **k)
                finally:
                    torch.set_default_dtype(saved)

            pipe.text_encoder.forward = te_forward64
            try:
                return refenv.render(pipe, self.refs.case, latents=self.initial_latents.double())
            finally:
                del pipe.text_encoder.forward
        finally:
            pipe.unet.float()
            pipe.vae.float()
            pipe.text_encoder.float()
            pipe.unet.load_state_dict(self.base_unet)
            pipe.text_encoder.load_state_dict(self.base_te)

    def images_for(self, deltas64, dora=None):
        out = {"base": self.image()}
        stats = {"base_vs_tiny_sd_seeded_pndm_image_max_abs": max_abs(out["base"], self.expected_base)}
        for name, su, st in SCALES:
            img = self.image(merged_state(self.base_unet, deltas64, self.names, "unet", su, dora),
                             merged_state(self.base_te, deltas64, self.names, "te", st, dora))
            out[name] = img
            img64 = self.image64(deltas64, su, st, dora)
            stats[name] = {
                "mean_abs_vs_base": float(np.abs(img - out["base"]).mean()),
                "max_abs_vs_base": float(np.abs(img - out["base"]).max()),
                "fp32_vs_fp64_max_abs": max_abs(img, img64),
                "saturated_fraction": float(((img <= 0) | (img >= 1)).mean()),
            }
        for part_name, su, st in (("unet_only", 1.0, 0.0), ("te_only", 0.0, 1.0)):
            img = self.image(merged_state(self.base_unet, deltas64, self.names, "unet", su, dora) if su else None,
                             merged_state(self.base_te, deltas64, self.names, "te", st, dora) if st else None)
            stats[part_name + "_mean_abs_vs_base"] = float(np.abs(img - out["base"]).mean())
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}, stats


# ------------------------------------------------------------------------------------------------ kohya file (1, 2)


def make_kohya(refs, renderer, out_dir, summary):
    name = "kohya_locon_te"
    log(name, ": create_network")
    pipe = refs.fresh_pipe()
    torch.manual_seed(SEEDS[name])
    net = refs.kohya_network(pipe)
    loras = net.text_encoder_loras + net.unet_loras
    names = lora_name_map(pipe)
    rel_info = seed_factors("kohya", loras, names, torch.Generator().manual_seed(SEEDS[name]), REL)
    rows = module_table(loras, names, pipe, "kohya")
    net.apply_to(pipe.text_encoder, pipe.unet, True, True)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    args = {"conv_dim": CONV_DIM_ARG, "conv_alpha": CONV_ALPHA_ARG}
    md = finish_metadata(sd, ss_metadata(
        "networks.lora", args,
        (name, "lora-anywhere fixture: sd-scripts networks/lora.py create_network on tiny-sd; seeded random weights")))
    path = os.path.join(out_dir, name + ".safetensors")
    size = save_safetensors(path, sd, md)

    # deltas, by sd-scripts' inference module (LoRAInfModule.get_weight) built from the written file
    log(name, ": deltas")
    file_sd, _ = load_safetensors(path)
    pipe2 = refs.fresh_pipe()
    with refenv.diffusers_layers_named_like_torch():
        inf_net, _ = refs.sd_scripts.create_network_from_weights(1.0, path, pipe2.vae, pipe2.text_encoder, pipe2.unet,
                                                                 for_inference=True)
    inf_net.apply_to(pipe2.text_encoder, pipe2.unet, True, True)  # registers the modules (pipe2 is not used again)
    inf_net.load_state_dict(file_sd, strict=True)
    inf_loras = {l.lora_name: l for l in inf_net.text_encoder_loras + inf_net.unet_loras}
    assert set(inf_loras) == {r["prefix"] for r in rows}
    deltas, deltas64, delta_check = {}, {}, {}
    for prefix, lora in inf_loras.items():
        with torch.no_grad():
            d32 = lora.get_weight(1.0)
        deltas[prefix] = d32.contiguous()
        # float64: the same formula (up @ down * alpha/dim; 3x3 convs: conv2d(down^T, up)^T) on the file's tensors
        up = file_sd[prefix + ".lora_up.weight"].double()
        down = file_sd[prefix + ".lora_down.weight"].double()
        scale = float(file_sd[prefix + ".alpha"]) / down.shape[0]
        if down.dim() == 2:
            d64 = up @ down * scale
        elif down.shape[2:] == (1, 1):
            d64 = (up[:, :, 0, 0] @ down[:, :, 0, 0])[:, :, None, None] * scale
        else:
            d64 = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale
        deltas64[prefix] = d64
        delta_check[prefix] = max_abs(d32, d64)
    # sd-scripts' merge path (LoRANetwork.merge_to -> LoRAInfModule.merge_to) must give base + delta
    pipe4 = refs.fresh_pipe()
    with refenv.diffusers_layers_named_like_torch():
        merge_net, _ = refs.sd_scripts.create_network_from_weights(1.0, path, pipe4.vae, pipe4.text_encoder, pipe4.unet,
                                                                   for_inference=True)
    merge_net.merge_to(pipe4.text_encoder, pipe4.unet, dict(file_sd), torch.float32, "cpu")
    merge_diff = 0.0
    names4 = lora_name_map(pipe4)
    for prefix in inf_loras:
        part, mpath, module = names4[prefix]
        base_w = (renderer.base_unet if part == "unet" else renderer.base_te)[mpath + ".weight"]
        merge_diff = max(merge_diff, max_abs(module.weight.detach(), base_w + deltas[prefix]))
    dpath = os.path.join(out_dir, name + ".deltas.safetensors")
    dsize, dense, probe_err = write_deltas(dpath, rows, deltas, deltas64, "dW at multiplier 1")

    log(name, ": images")
    images, stats = renderer.images_for(deltas64)
    # the same network applied at run time (forward replacement, multiplier 1) instead of merged
    pipe3 = refs.fresh_pipe()
    net3 = refs.kohya_network(pipe3)
    apply_kohya_runtime(net3, pipe3.text_encoder, pipe3.unet)  # registers the modules, then load the file into them
    net3.load_state_dict(file_sd, strict=True)
    runtime_img = refenv.render(pipe3, refs.case)
    stats["runtime_forward_vs_merged_unet1.0_te1.0_max_abs"] = max_abs(runtime_img, images["unet1.0_te1.0"])
    ipath = os.path.join(out_dir, name + ".images.safetensors")
    isize = save_safetensors(ipath, images, {"layout": "NHWC float32 [1,16,16,3] in [0,1] (output_type='np')"})

    summary[name] = {
        "file": name + ".safetensors", "bytes": size, "deltas_bytes": dsize, "images_bytes": isize,
        "metadata": md, "module_counts": counts(rows), "variant_counts": variant_counts(rows), "n_modules": len(rows),
        "seed": SEEDS[name], "relative_delta_rms": REL,
        "delta_fp32_vs_fp64_max_abs": max(delta_check.values()),
        "dense_delta_modules": dense, "probe_fp32_vs_fp64_max_abs": probe_err,
        "sd_scripts_merge_to_vs_base_plus_delta_max_abs": merge_diff,
        "images": stats,
    }
    log(name, ": done", json.dumps({k: v for k, v in stats.items()}, indent=None)[:600])
    return path


# ------------------------------------------------------------------------------------------------ LyCORIS files (3, 5)


def lycoris_kind(extra):
    return {"loha": "loha", "lokr": "lokr", "locon": "locon"}[extra["algo"]]


def make_lycoris(refs, renderer, out_dir, summary, name):
    extra = LYCORIS_FILES[name]
    kind = lycoris_kind(extra)
    dora = extra.get("dora_wd") == "True"
    log(name, ": create_network", extra)
    pipe = refs.fresh_pipe()
    torch.manual_seed(SEEDS[name])
    net = refs.lycoris_network(pipe, extra)
    loras = net.text_encoder_loras + net.unet_loras
    names = lora_name_map(pipe)
    seed_factors(kind, loras, names, torch.Generator().manual_seed(SEEDS[name]), REL)
    rows = module_table(loras, names, pipe, kind)
    net.apply_to(pipe.text_encoder, pipe.unet, apply_text_encoder=True, apply_unet=True)
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    args = {"algo": extra["algo"], "conv_dim": CONV_DIM_ARG, "conv_alpha": CONV_ALPHA_ARG,
            "preset": "kohya-targets.toml"}
    args.update({k: v for k, v in extra.items() if k != "algo"})
    md = finish_metadata(sd, ss_metadata(
        "lycoris.kohya", args,
        (name, "lora-anywhere fixture: LyCORIS lycoris.kohya create_network on tiny-sd; seeded random weights")))
    path = os.path.join(out_dir, name + ".safetensors")
    size = save_safetensors(path, sd, md)

    # deltas: LyCORIS's own modules rebuilt from the written file (create_network_from_weights ->
    # make_module_from_state_dict), where that reproduces the module; else the modules that wrote the file.
    log(name, ": deltas")
    pipe2 = refs.fresh_pipe()
    file_sd, _ = load_safetensors(path)
    reload_notes = {}
    try:
        rnet, _ = refs.lycoris_kohya.create_network_from_weights(1.0, path, pipe2.vae, pipe2.text_encoder, pipe2.unet,
                                                                 weights_sd=dict(file_sd))
        reloaded = {l.lora_name: l for l in rnet.text_encoder_loras + rnet.unet_loras}
    except Exception as e:  # noqa: BLE001
        reloaded = {}
        reload_notes["create_network_from_weights"] = "%s: %s" % (type(e).__name__, e)
    written = {l.lora_name: l for l in loras}
    deltas, deltas64, checks = {}, {}, {"delta_fp32_vs_fp64_max_abs": 0.0, "reloaded_vs_written_max_abs": 0.0,
                                        "get_diff_weight_over_forward_delta": {}}
    dora_fns, refs64 = {}, {}
    for prefix, lora_w in written.items():
        lora = reloaded.get(prefix)
        if lora is None:
            reload_notes.setdefault("not_rebuilt_from_file", []).append(prefix)
            lora = lora_w
        with torch.no_grad():
            d32 = forward_delta(kind, lora).reshape(lora.shape)
            checks["reloaded_vs_written_max_abs"] = max(
                checks["reloaded_vs_written_max_abs"], max_abs(d32, forward_delta(kind, lora_w).reshape(lora_w.shape)))
            gdw = lora.get_diff_weight(1.0)[0].reshape(lora.shape)
            checks["get_diff_weight_over_forward_delta"][prefix] = (gdw.double().norm() / d32.double().norm()).item()
            if dora:
                deltas[prefix] = lora.get_merged_weight(1.0)[0].detach().float().contiguous()
            else:
                deltas[prefix] = d32.detach().float().contiguous()
            lora.double()
            d64 = forward_delta(kind, lora).reshape(lora.shape).detach()
            if dora:
                ref64 = lora.apply_weight_decompose(lora.org_weight.detach().double() + d64, 1.0)
                dora_fns[prefix] = (lambda mod: (lambda w, s: mod.apply_weight_decompose(w, s)))(lora)
            else:
                ref64 = d64
            checks["delta_fp32_vs_fp64_max_abs"] = max(checks["delta_fp32_vs_fp64_max_abs"],
                                                       max_abs(deltas[prefix], ref64))
            deltas64[prefix] = d64
            refs64[prefix] = ref64.detach()
    ratios = list(checks["get_diff_weight_over_forward_delta"].values())
    checks["get_diff_weight_over_forward_delta"] = {"min": min(ratios), "max": max(ratios)}
    dpath = os.path.join(out_dir, name + ".deltas.safetensors")
    dsize, dense, probe_err = write_deltas(dpath, rows, deltas, refs64,
                                           "merged weight W' at multiplier 1 (DoRA)" if dora else "dW at multiplier 1")
    checks["probe_fp32_vs_fp64_max_abs"] = probe_err

    log(name, ": images")
    images, stats = renderer.images_for(deltas64, dora_fns if dora else None)
    # the network applied at run time (LyCORIS forward, bypass_mode False, multiplier 1) instead of merged
    pipe3 = refs.fresh_pipe()
    torch.manual_seed(SEEDS[name])
    net3 = refs.lycoris_network(pipe3, extra)
    net3.apply_to(pipe3.text_encoder, pipe3.unet, apply_text_encoder=True, apply_unet=True)
    net3.load_state_dict(file_sd, strict=False)
    if dora:  # dora_scale is a Parameter; custom_state_dict is used for saving only, so copy it explicitly
        for l in net3.text_encoder_loras + net3.unet_loras:
            with torch.no_grad():
                l.dora_scale.copy_(file_sd[l.lora_name + ".dora_scale"])
    runtime_img = refenv.render(pipe3, refs.case)
    stats["runtime_forward_vs_merged_unet1.0_te1.0_max_abs"] = max_abs(runtime_img, images["unet1.0_te1.0"])
    ipath = os.path.join(out_dir, name + ".images.safetensors")
    isize = save_safetensors(ipath, images, {"layout": "NHWC float32 [1,16,16,3] in [0,1] (output_type='np')"})

    summary[name] = {
        "file": name + ".safetensors", "bytes": size, "deltas_bytes": dsize, "images_bytes": isize,
        "metadata": md, "module_counts": counts(rows), "variant_counts": variant_counts(rows), "n_modules": len(rows),
        "seed": SEEDS[name], "relative_delta_rms": REL, "checks": checks, "reload_notes": reload_notes,
        "dense_delta_modules": dense,
        "images": stats,
    }
    log(name, ": done", json.dumps(stats)[:600], json.dumps(checks)[:300], json.dumps(reload_notes)[:300])
    return path


# ------------------------------------------------------------------------------------------------ training step (4)


def training_step(refs, kohya_path, dtype=torch.float32):
    exp, _ = load_safetensors(os.path.join(refs.args.tiny_sd, "expected", "training.safetensors"))
    pipe = refs.fresh_pipe()
    unet, te = pipe.unet, pipe.text_encoder
    file_sd, _ = load_safetensors(kohya_path)
    torch.manual_seed(SEEDS["kohya_locon_te"])
    net = refs.kohya_network(pipe)
    apply_kohya_runtime(net, te, unet)
    net.load_state_dict(file_sd, strict=True)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    if dtype != torch.float32:
        unet.to(dtype)
        te.to(dtype)
        net.to(dtype)
    params, descriptions = net.prepare_optimizer_params(TRAIN["text_encoder_lr"], TRAIN["unet_lr"], TRAIN["unet_lr"])
    opt = torch.optim.AdamW(params, lr=TRAIN["unet_lr"], betas=TRAIN["betas"], eps=TRAIN["eps"],
                            weight_decay=TRAIN["weight_decay"])
    unet.train()
    te.train()
    net.train()
    param_names = {id(p): n for n, p in net.named_parameters()}
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}

    input_ids = exp["input_ids"]
    noisy = exp["noisy_latents"].to(dtype)
    noise = exp["noise"].to(dtype)
    timesteps = exp["timesteps"]
    ehs1 = te(input_ids)[0]
    ehs = ehs1.repeat(noisy.shape[0], 1, 1)
    model_pred = unet(noisy, timesteps, ehs).sample
    loss = F.mse_loss(model_pred.float() if dtype == torch.float32 else model_pred,
                      noise.float() if dtype == torch.float32 else noise, reduction="mean")
    loss.backward()
    grads = {param_names[id(p)]: p.grad.detach().clone() for g in opt.param_groups for p in g["params"]}
    opt.step()
    after = {param_names[id(p)]: p.detach().clone() for g in opt.param_groups for p in g["params"]}
    groups = [{"description": d, "lr": g["lr"], "n_params": len(g["params"]),
               "first": param_names[id(g["params"][0])], "last": param_names[id(g["params"][-1])]}
              for d, g in zip(descriptions, opt.param_groups)]
    return {"exp": exp, "init": init, "grads": grads, "after": after, "loss": loss.detach(),
            "ehs": ehs1.detach(), "model_pred": model_pred.detach(), "groups": groups,
            "order": [param_names[id(p)] for g in opt.param_groups for p in g["params"]]}


def make_kohya_step(refs, out_dir, summary, kohya_path):
    name = "kohya_step"
    log(name, ": float32")
    r = training_step(refs, kohya_path)
    log(name, ": float64 (noise estimate)")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # transformers' causal mask uses torch.full(finfo(float64).min)
    try:
        r64 = training_step(refs, kohya_path, torch.float64)
    finally:
        torch.set_default_dtype(saved)
    exp = r["exp"]
    # the DDPM noisy latents of the tiny-sd case, recomputed here as a check
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(refs.fresh_pipe().scheduler.config)
    noisy_check = max_abs(ddpm.add_noise(exp["latents"], exp["noise"], exp["timesteps"]), exp["noisy_latents"])

    tensors = {}
    for k in ("input_ids", "latents", "noise", "timesteps", "noisy_latents"):
        tensors["input/" + k] = exp[k]
    for k, v in r["init"].items():
        tensors["init/" + k] = v
    for k, v in r["grads"].items():
        tensors["grad/" + k] = v
    for k, v in r["after"].items():
        tensors["after/" + k] = v
    tensors["output/loss"] = r["loss"].reshape(1).float()
    tensors["output/encoder_hidden_states"] = r["ehs"].float()
    tensors["output/model_pred"] = r["model_pred"].float()
    grad_norm = torch.sqrt(sum(g.double().pow(2).sum() for g in r["grads"].values())).float().reshape(1)
    tensors["output/grad_total_norm"] = grad_norm
    md = {"format": "kohya training step fixture; see kohya_step.json"}
    path = os.path.join(out_dir, name + ".safetensors")
    size = save_safetensors(path, tensors, md)

    grad_d = max(max_abs(r["grads"][k], r64["grads"][k]) for k in r["grads"])
    grad_max = max(v.abs().max().item() for v in r["grads"].values())
    all_g = torch.cat([v.flatten() for v in r["grads"].values()]).abs()
    after_d = max(max_abs(r["after"][k], r64["after"][k]) for k in r["after"])
    file_sd, _ = load_safetensors(kohya_path)
    init_vs_file = max(max_abs(r["init"][k], file_sd[k]) for k in file_sd)
    # AdamW step 1 restated from the stored grads (torch 1.13 single-tensor AdamW), as a check of the recorded order
    restated = 0.0
    for key in r["after"]:
        lr = TRAIN["text_encoder_lr"] if key.startswith("lora_te_") else TRAIN["unet_lr"]
        p = r["init"][key].double()
        g = r["grads"][key].double()
        b1, b2 = TRAIN["betas"]
        p = p * (1 - lr * TRAIN["weight_decay"])
        m = (1 - b1) * g
        v = (1 - b2) * g * g
        p = p - (lr / (1 - b1)) * m / (v.sqrt() / math.sqrt(1 - b2) + TRAIN["eps"])
        restated = max(restated, max_abs(p, r["after"][key]))
    info = {
        "file": name + ".safetensors", "bytes": size,
        "network": {"module": "networks.lora (sd-scripts)", "create_network": {
            "multiplier": 1.0, "network_dim": NETWORK_DIM, "network_alpha": NETWORK_ALPHA,
            "conv_dim": CONV_DIM_ARG, "conv_alpha": CONV_ALPHA_ARG},
            "initial_weights": "kohya_locon_te.safetensors (loaded with load_state_dict after apply_to)",
            "init_vs_kohya_locon_te_max_abs": init_vs_file,
            "dropout": None, "rank_dropout": None, "module_dropout": None},
        "inputs": {
            "source": "tiny-sd expected/training.safetensors (case training_step), copied under input/",
            "input_ids": "tokenizer('a sketch', padding='max_length', max_length=77, truncation=True) [1, 77]",
            "latents": "[2, 4, 16, 16] vae latent sample * 0.18215 (not used by the step; provenance of noisy_latents)",
            "noise": "[2, 4, 16, 16] = target (prediction_type epsilon)",
            "timesteps": "int64 [100, 700]",
            "noisy_latents": "DDPMScheduler.from_config(pipe.scheduler.config).add_noise(latents, noise, timesteps)",
            "noisy_latents_recomputed_max_abs": noisy_check},
        "dtype": "float32 everywhere (weights, LoRA, activations, grads, optimizer state); int64 ids/timesteps",
        "order_of_operations": [
            "pipe = StableDiffusionPipeline.from_pretrained(tiny-sd/pipeline); unet, text_encoder = pipe.unet, pipe.text_encoder",
            "network = networks.lora.create_network(1.0, 4, 2.0, vae, text_encoder, unet, conv_dim='2', conv_alpha='1')",
            "network.apply_to(text_encoder, unet, True, True)  (forwards replaced; diffusers' extra `scale` argument ignored)",
            "network.load_state_dict(load_file('kohya_locon_te.safetensors'))  -> init/*",
            "unet.requires_grad_(False); text_encoder.requires_grad_(False)",
            "params, descriptions = network.prepare_optimizer_params(text_encoder_lr=5e-5, unet_lr=1e-3, default_lr=1e-3)"
            "  -> group 0 = text-encoder LoRA params (lr 5e-5), group 1 = U-Net LoRA params (lr 1e-3); requires_grad_(True)",
            "optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)",
            "unet.train(); text_encoder.train(); network.train()  (no dropout anywhere: identical to eval)",
            "encoder_hidden_states = text_encoder(input_ids)[0]  [1, 77, 32], WITH the LoRA, with grad -> output/encoder_hidden_states",
            "encoder_hidden_states = encoder_hidden_states.repeat(2, 1, 1)  (as the tiny-sd training case; kohya would encode the two identical captions as a batch of 2: same values)",
            "model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample -> output/model_pred",
            "loss = F.mse_loss(model_pred.float(), noise.float(), reduction='mean') -> output/loss",
            "loss.backward() -> grad/*  (no gradient clipping, no loss scaling)",
            "optimizer.step() -> after/*",
        ],
        "optimizer": {"class": "torch.optim.AdamW (torch 1.13, single-tensor path, foreach=False, amsgrad=False, maximize=False)",
                      "betas": list(TRAIN["betas"]), "eps": TRAIN["eps"], "weight_decay": TRAIN["weight_decay"],
                      "param_groups": r["groups"], "schedule": "constant, no warm-up, one step",
                      "update": "p *= 1 - lr*wd; m = (1-b1)*g; v = (1-b2)*g*g; p -= lr/(1-b1) * m / (sqrt(v)/sqrt(1-b2) + eps)",
                      "restated_update_vs_after_max_abs": restated},
        "grad_clipping": None,
        "parameter_order": r["order"],
        "loss": r["loss"].item(),
        "grad_total_norm": grad_norm.item(),
        "observed": {
            "loss_fp32_vs_fp64_abs": abs(r["loss"].item() - r64["loss"].item()),
            "grads_fp32_vs_fp64_max_abs": grad_d,
            "grads_max_abs_value": grad_max,
            "min_abs_grad_element": all_g.min().item(),
            "elements_with_abs_grad_below_1e-7": int((all_g < 1e-7).sum()),
            "total_grad_elements": int(all_g.numel()),
            "after_fp32_vs_fp64_max_abs": after_d,
            "after_fp32_vs_fp64_max_abs_where_abs_grad_ge_1e-5": max(
                ((r["after"][k].double() - r64["after"][k]).abs() * (r64["grads"][k].abs() >= 1e-5)).max().item()
                for k in r["after"]),
            "encoder_hidden_states_fp32_vs_fp64_max_abs": max_abs(r["ehs"], r64["ehs"]),
            "model_pred_fp32_vs_fp64_max_abs": max_abs(r["model_pred"], r64["model_pred"]),
        },
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(info, f, indent=1)
    summary[name] = {k: info[k] for k in ("file", "bytes", "loss", "grad_total_norm", "observed")}
    log(name, ": done", json.dumps(info["observed"]))


# ------------------------------------------------------------------------------------------------ main


def versions(args):
    import diffusers
    import ftfy
    import transformers

    return {
        "diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
        "numpy": np.__version__, "python": platform.python_version(), "ftfy": ftfy.__version__,
        "sd_scripts_commit": refenv.git_commit(args.sd_scripts), "lycoris_commit": refenv.git_commit(args.lycoris),
        "torch_threads": torch.get_num_threads(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests/StableLora.Tests/Fixtures/lora-anywhere"))
    ap.add_argument("--tiny-sd", default=os.path.join(REPO, "tests/StableLora.Tests/Fixtures/tiny-sd"))
    ap.add_argument("--sd-scripts", default=os.environ.get("LORA_ANYWHERE_SD_SCRIPTS"))
    ap.add_argument("--lycoris", default=os.environ.get("LORA_ANYWHERE_LYCORIS"))
    ap.add_argument("--only", nargs="*", help="subset of: kohya_locon_te " + " ".join(LYCORIS_FILES) + " kohya_step")
    args = ap.parse_args()
    if not args.sd_scripts or not args.lycoris:
        sys.exit("need --sd-scripts and --lycoris checkouts (or LORA_ANYWHERE_SD_SCRIPTS / LORA_ANYWHERE_LYCORIS)")
    refenv.setup_torch()
    import diffusers

    if diffusers.__version__ != "0.21.4":
        sys.exit("need diffusers 0.21.4 (the tiny-sd reference), found " + diffusers.__version__)
    os.makedirs(args.out, exist_ok=True)
    refs = Refs(args)
    renderer = Renderer(refs)
    summary_path = os.path.join(args.out, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary["versions"] = versions(args)
    summary["constants"] = {"network_dim": NETWORK_DIM, "network_alpha": NETWORK_ALPHA, "conv_dim": CONV_DIM,
                            "conv_alpha": CONV_ALPHA, "relative_delta_rms": REL, "dora_scale_jitter": DORA_SCALE_JITTER,
                            "seeds": SEEDS, "scales": SCALES, "lycoris_presets_toml": PRESETS,
                            "probe_seed": PROBE_SEED, "dense_delta_max_elements": DENSE_DELTA_MAX_ELEMENTS,
                            "render_case": refenv.SEEDED_CASE_ID}
    want = set(args.only or ["kohya_locon_te", *LYCORIS_FILES, "kohya_step"])

    def save_summary():
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=1)

    kohya_path = os.path.join(args.out, "kohya_locon_te.safetensors")
    if "kohya_locon_te" in want:
        make_kohya(refs, renderer, args.out, summary)
        save_summary()
    for name in LYCORIS_FILES:
        if name in want:
            make_lycoris(refs, renderer, args.out, summary, name)
            save_summary()
    if "kohya_step" in want:
        make_kohya_step(refs, args.out, summary, kohya_path)
        save_summary()
    log("all done")


if __name__ == "__main__":
    main()
