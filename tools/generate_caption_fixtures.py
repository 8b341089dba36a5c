"""Writes tests/StableLora.Tests/Fixtures/captions/captions.json from sd-scripts' BaseDataset.process_caption.

Usage: python3 tools/generate_caption_fixtures.py SD_SCRIPTS_DIR OUT_JSON
process_caption is cut out of library/train_util.py's source text (the module's heavy imports are not needed) and run
on a stand-in dataset and subset. Each case records sd-scripts' output; for cases with random draws ("random": true)
the output depends on Python's RNG, so the test checks the rules (the kept tags, the multiset of tags) instead.
"""
import ast
import json
import math
import random
import re
import sys
import textwrap
import types


def load(sd_scripts):
    path = f"{sd_scripts}/library/train_util.py"
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "BaseDataset":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "process_caption":
                    scope = {"math": math, "random": random, "re": re, "BaseSubset": object}
                    exec(textwrap.dedent(ast.get_source_segment(source, item)), scope)
                    return scope["process_caption"]
    raise RuntimeError("process_caption not found")


def subset(**kw):
    base = dict(caption_prefix=None, caption_suffix=None, caption_dropout_rate=0.0, caption_dropout_every_n_epochs=0,
                enable_wildcard=False, shuffle_caption=False, token_warmup_step=0, caption_tag_dropout_rate=0.0,
                keep_tokens=0, keep_tokens_separator="", caption_separator=",", token_warmup_min=1, secondary_separator=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


CASES = [
    ("plain", "a photo of sks dog", {}, 1, False),
    ("first line only", "line one, tag\nline two", {}, 1, False),
    ("prefix and suffix", "a dog, grass", {"caption_prefix": "masterpiece,", "caption_suffix": ", best"}, 1, False),
    ("every 2nd epoch, epoch 2", "a dog, grass", {"caption_dropout_every_n_epochs": 2}, 2, False),
    ("every 2nd epoch, epoch 3", "a dog, grass", {"caption_dropout_every_n_epochs": 2}, 3, False),
    ("tag dropout 1, keep 2", " sks,  dog , grass, sky,, tree ", {"caption_tag_dropout_rate": 1.0, "keep_tokens": 2}, 1, False),
    ("tag dropout 1, separator", "sks, dog ||| grass, sky ||| tail a, tail b", {"caption_tag_dropout_rate": 1.0, "keep_tokens_separator": "|||"}, 1, False),
    ("tag dropout 1, separator, keep ignored", "sks ||| grass, sky", {"caption_tag_dropout_rate": 1.0, "keep_tokens_separator": "|||", "keep_tokens": 5}, 1, False),
    ("shuffle one movable tag", "sks,dog,  grass ", {"shuffle_caption": True, "keep_tokens": 2}, 1, False),
    ("shuffle keeps empty tags without separator", "a,,b", {"shuffle_caption": True, "keep_tokens": 3}, 1, False),
    ("shuffle, separator drops empty tags", "a,, b |||  , c,", {"shuffle_caption": True, "keep_tokens_separator": "|||"}, 1, False),
    ("separator absent: keep_tokens", "a, b, c", {"shuffle_caption": True, "keep_tokens": 3, "keep_tokens_separator": "|||"}, 1, False),
    ("shuffle with prefix", "b, c", {"shuffle_caption": True, "keep_tokens": 1, "caption_prefix": "a,"}, 1, True),
    ("shuffle keep 1", "sks, red, green, blue, yellow, cyan", {"shuffle_caption": True, "keep_tokens": 1}, 1, True),
    ("shuffle separator", "sks, girl ||| red, green, blue, yellow ||| end, fin", {"shuffle_caption": True, "keep_tokens_separator": "|||"}, 1, True),
    ("tag dropout half", "sks, red, green, blue, yellow, cyan", {"caption_tag_dropout_rate": 0.5, "keep_tokens": 1}, 1, True),
]


def main():
    process_caption = load(sys.argv[1])
    random.seed(0)
    out = []
    for name, caption, options, epoch, is_random in CASES:
        dataset = types.SimpleNamespace(current_epoch=epoch, current_step=0, max_train_steps=100, replacements={})
        result = process_caption(dataset, subset(**options), caption)
        out.append({"name": name, "caption": caption, "options": options, "epoch": epoch, "random": is_random, "expected": result})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump({"cases": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
