"""Writes tests/StableLora.Tests/Fixtures/long-prompts/: long-prompt encodings and CLIP skip on the tiny-sd text encoder.

The text encoder is transformers' own CLIPTextModel (v4.32) with the weights of
tests/StableLora.Tests/Fixtures/tiny-sd/pipeline/text_encoder; the token ids come from transformers' slow CLIPTokenizer
with that pipeline's vocab.json and merges.txt. What is done with them is re-stated here from reading the two tools
(no code of theirs is copied or imported):

kohya-ss/sd-scripts, training (library/train_util.py: get_input_ids, get_hidden_states; SD 1.x, whose pad id is the
end id), for max_token_length L in 75, 150, 225:
  ids    = tokenizer(caption, padding="max_length", truncation=True, max_length=L + 2).input_ids    (L + 2 ids)
  L = 75: the 77 ids as they are.
  else:   chunk c (c = 0 .. L/75 - 1) = [ids[0]] + ids[1 + 75c : 76 + 75c] + [ids[-1]]              (77 ids each)
  states = each chunk through the text encoder: last_hidden_state for clip_skip 1 (sd-scripts' None), else
           final_layer_norm(hidden_states[-clip_skip]); chunks laid end to end (n x 77)
  L > 75: [state 0] + for each chunk its states 1..75 + [last state]                                 (L + 2 states)

AUTOMATIC1111, generation (modules/sd_hijack_clip.py: tokenize_line, forward; no emphasis, no BREAK, no embeddings):
  the prompt's tokens (no start/end) are put into chunks of 75; a comma remembers its place in the chunk; when a
  chunk is full and the next token is not a comma and the chunk's last comma is at most 20 (comma_padding_backtrack)
  places from its end, the chunk ends after that comma and the tokens after it start the next chunk; a chunk is
  closed by padding it with end ids to 75 and adding the start id in front and an end id behind; the last, partly
  filled chunk (or an empty one for an empty prompt) is closed too. Each chunk is encoded on its own (clip skip as
  above) and the chunks' states are laid end to end. Both prompts are padded to the same chunk count with empty
  chunks (start id + 76 end ids), as A1111's "pad prompt/negative prompt to be same length" option does.

Usage, from the repository root (Debian's python3-torch 1.13; transformers v4.32 and huggingface_hub v0.16.4 sources
on PYTHONPATH, plus a small stand-in for the safetensors package, see README.md in the output folder):
  . /work/scratch/clipref/env.sh && /usr/bin/python3 tools/generate_long_prompt_fixtures.py
"""
import json
import os
import platform

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIPELINE = os.path.join(ROOT, "tests", "StableLora.Tests", "Fixtures", "tiny-sd", "pipeline")
OUT = os.path.join(ROOT, "tests", "StableLora.Tests", "Fixtures", "long-prompts")
CHUNK = 75
BACKTRACK = 20

TAGS = ("masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, open mouth, blue eyes, blonde hair, "
        "shirt, long sleeves, dress, ribbon, holding, hair ribbon, flower, outdoors, sky, day, cloud, tree, blue sky, "
        "grass, wind, field, sunlight, petals, scenery, light particles")
PROSE = ("an old lighthouse keeper walks along the rocky shore at dawn while the sea mist slowly lifts from the water and "
         "gulls circle above the wet stones where small boats rest on their sides waiting for the tide to return")

CAPTIONS = {
    "short": "a photo of a cat",
    "tokens100": PROSE + ", " + TAGS,
    "tokens200": PROSE + " " + TAGS + " " + PROSE + " " + PROSE + ", watercolor, soft shading, pastel colors",
    "tokens260": PROSE + " " + TAGS + " " + PROSE + " " + TAGS + " " + PROSE,
}

# Generation cases: (prompt, negative prompt).
A1111_CASES = {
    "tags_vs_short_negative": (TAGS + ", watercolor, soft shading, " + TAGS, "blurry, lowres"),
    "prose_vs_long_negative": (" ".join([PROSE] * 4), TAGS + ", " + TAGS),
}


def load_text_encoder():
    config = CLIPTextConfig.from_pretrained(os.path.join(PIPELINE, "text_encoder"))
    model = CLIPTextModel(config)
    state = load_file(os.path.join(PIPELINE, "text_encoder", "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids is a non-persistent buffer in transformers 4.32; the file may or may not hold it.
    assert all(k.endswith("position_ids") for k in missing + unexpected), (missing, unexpected)
    return model.eval()


def encode(model, ids, clip_skip):
    """[n, 77] ids -> [n, 77, hidden]: the last hidden state, or final_layer_norm(hidden_states[-clip_skip])."""
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.int64), output_hidden_states=True, return_dict=True)
        if clip_skip == 1:
            return out.last_hidden_state
        return model.text_model.final_layer_norm(out.hidden_states[-clip_skip])


def kohya_chunks(tokenizer, caption, max_token_length):
    ids = tokenizer(caption, padding="max_length", truncation=True, max_length=max_token_length + 2).input_ids
    if max_token_length == CHUNK:
        return [ids]
    return [[ids[0]] + ids[1 + CHUNK * c: 1 + CHUNK * (c + 1)] + [ids[-1]] for c in range(max_token_length // CHUNK)]


def kohya_states(model, chunks, clip_skip):
    states = encode(model, chunks, clip_skip)  # [n, 77, hidden]
    if len(chunks) == 1:
        return states[0]
    parts = [states[0, :1]] + [states[c, 1:1 + CHUNK] for c in range(len(chunks))] + [states[-1, -1:]]
    return torch.cat(parts, 0)


def a1111_chunks(tokenizer, prompt):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.get_vocab()[",</w>"]
    tokens = tokenizer(prompt, truncation=False, add_special_tokens=False).input_ids
    chunks, current, last_comma = [], [], -1

    def close():
        nonlocal current, last_comma
        chunks.append([bos] + current + [eos] * (CHUNK - len(current)) + [eos])
        current, last_comma = [], -1

    for token in tokens:
        if token == comma:
            last_comma = len(current)
        elif len(current) == CHUNK and last_comma != -1 and len(current) - last_comma <= BACKTRACK:
            rest = current[last_comma + 1:]
            current = current[:last_comma + 1]
            close()
            current = rest
        if len(current) == CHUNK:
            close()
        current.append(token)
    if current or not chunks:
        close()
    return chunks


def main():
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(PIPELINE, "tokenizer"))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    model = load_text_encoder()
    layers = model.config.num_hidden_layers
    tensors, cases = {}, {"kohya": [], "a1111": []}

    for name, caption in CAPTIONS.items():
        token_count = len(tokenizer(caption, add_special_tokens=False).input_ids)
        for length in (75, 150, 225):
            if length == 75 and name not in ("short", "tokens100"):
                continue
            chunks = kohya_chunks(tokenizer, caption, length)
            key = f"kohya_{name}_{length}"
            tensors[key + "_ids"] = torch.tensor(chunks, dtype=torch.int64)
            skips = (1, 2, 3) if name == "tokens200" and length == 225 else (1, 2)
            for skip in skips:
                tensors[f"{key}_skip{skip}"] = kohya_states(model, chunks, skip).contiguous()
            cases["kohya"].append({"key": key, "caption": name, "max_token_length": length, "clip_skips": list(skips),
                                   "caption_tokens": token_count, "states": length + 2})

    for name, (prompt, negative) in A1111_CASES.items():
        sides = {"negative": a1111_chunks(tokenizer, negative), "prompt": a1111_chunks(tokenizer, prompt)}
        count = max(len(c) for c in sides.values())
        empty = [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (CHUNK + 1)
        key = f"a1111_{name}"
        for side, chunks in sides.items():
            tensors[f"{key}_{side}_ids"] = torch.tensor(chunks, dtype=torch.int64)
        for skip in (1, 2):
            batch = []
            for side in ("negative", "prompt"):
                padded = sides[side] + [empty] * (count - len(sides[side]))
                batch.append(torch.cat([encode(model, [chunk], skip)[0] for chunk in padded], 0))
            tensors[f"{key}_skip{skip}"] = torch.stack(batch).contiguous()
        cases["a1111"].append({"key": key, "prompt": prompt, "negative_prompt": negative, "clip_skips": [1, 2],
                               "chunks": {side: len(c) for side, c in sides.items()}, "padded_chunks": count,
                               "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False).input_ids),
                               "negative_tokens": len(tokenizer(negative, add_special_tokens=False).input_ids)})

    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "long_prompts.safetensors"))
    info = {
        "captions": CAPTIONS,
        "cases": cases,
        "text_encoder_layers": layers,
        "comma_padding_backtrack": BACKTRACK,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
