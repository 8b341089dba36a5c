"""Writes tests/StableLora.Tests/Fixtures/clip-text/cases.json: text-cleaning and tokenisation cases for ClipTokenizer.

For every input it records
  fixed       ftfy.fix_text(input)                       (the real ftfy 6.1.1)
  is_bad      ftfy.badness.is_bad(input)                 (the real ftfy 6.1.1)
  normalized  whitespace_clean(fixed).lower()            (regex module \\s+ -> ' ', str.strip, str.lower)
  words       regex.findall(CLIP pattern, normalized)    (the regex module, IGNORECASE)
  ids         the ids of the slow CLIPTokenizer's tokenize() (no bos/eos), computed here by re-stating its steps:
              split at the special-token literals, the above per piece, byte-level BPE with '</w>'.

Needs ftfy 6.1.1 and the regex module. The inputs are built here (fixed seed): phrases in many scripts, their mojibake
in the character sets ftfy repairs (with the usual damage: lost bytes, spaces for U+00A0, double encoding, mixing),
HTML references, control and formatting characters, and random strings over the characters mojibake is made of.

Usage: python3 tools/generate_clip_text_cases.py > tests/StableLora.Tests/Fixtures/clip-text/cases.json
"""
import json
import random
import sys

import ftfy
import ftfy.badness
import regex

if ftfy.__version__ != "6.1.1":
    sys.exit(f"need ftfy 6.1.1, found {ftfy.__version__}")

TOKENIZER = "tests/StableLora.Tests/Fixtures/tiny-sd/pipeline/tokenizer/"
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def byte_symbols():
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return symbols


class Bpe:
    def __init__(self):
        with open(TOKENIZER + "vocab.json", encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(TOKENIZER + "merges.txt", encoding="utf-8") as f:
            lines = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
        self.rank = {tuple(line.split()): i for i, line in enumerate(lines)}
        self.symbols = byte_symbols()

    def word_ids(self, word):
        if word in SPECIALS:
            return [self.vocab[word]]
        parts = [self.symbols[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            ranked = [(self.rank.get(pair, float("inf")), pair) for pair in zip(parts, parts[1:])]
            best_rank, best = min(ranked, key=lambda x: x[0])
            if best_rank == float("inf"):
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        unknown = self.vocab["<|endoftext|>"]
        return [self.vocab.get(p, unknown) for p in parts]


def normalize(text):
    return regex.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()


def split_specials(text):
    pieces, start, i = [], 0, 0
    while i < len(text):
        special = next((s for s in SPECIALS if text.startswith(s, i)), None)
        if special:
            pieces += [text[start:i], special]
            i += len(special)
            start = i
        else:
            i += 1
    pieces.append(text[start:])
    return [p for p in pieces if p]


def token_ids(bpe, text):
    ids = []
    for piece in split_specials(text):
        if piece in SPECIALS:
            ids.append(bpe.vocab[piece])
        else:
            for word in WORD_PATTERN.findall(normalize(piece)):
                ids += bpe.word_ids(word)
    return ids


PHRASES = [
    "café crème brûlée", "naïve résumé", "Ångström", "Straße", "Ørsted wind", "señor niño", "Œuvre complète",
    "ÀÉÎÕÜ ÿ", "à la mode", "São Paulo", "Kraków", "Zażółć gęślą jaźń", "Příliš žluťoučký kůň", "İstanbul ığdır şeker",
    "Καλημέρα κόσμε", "ΟΔΟΣ ΣΟΦΟΣ", "Привет, мир", "Україна ґанок", "Tiếng Việt có dấu", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "สวัสดีครับ", "日本の桜と富士山", "一只猫坐在窗台上", "한국어 문장입니다", "ﾊﾝｶｸ ｶﾀｶﾅ", "ＦＵＬＬ　ＷＩＤＴＨ１２３",
    "ﬁne ﬂour ﬀ ﬃ ﬄ ﬅ ﬆ Ĳssel ǅ", "don’t “quote” ‘me’ „low“ ‹a› «b»", "em—dash en–dash…", "25°C ½ cup ×2 µm ±3",
    "©2023 ® ™", "€100 £5 ¥300 ₧", "≤ ≥ ≠ √ ∞ ∑ ∏ ∂ ∆", "│┌┐└┘├┤┬┴┼ ═║╔╗", "(╯°□°）╯︵ ┻━┻", "¯\\_(ツ)_/¯",
    "👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 🏳️‍🌈", "a\u00a0b\u200bc\u200dd\ufeffe", "x\u2028y\u2029z\u0085w", "tab\there\r\nCRLF\rCR",
    "\x1b[31mred\x1b[0m text", "bell\x07 and \x00nul \x7fdel", "\u202eright-to-left\u202c", "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝", "ǈudevit Ǆ",
    "it's we're they've I'm you'll he'd ISN'T", "'sup 'til ''s", "hello!!! ???", "snake_case kebab-case CamelCase",
    "ΣΑΣ Σ ΑΣ. ὈΔΥΣΣΕΎΣ", "ͅ ᾳ ᾼΣ", "ſtop ſ'ſ", "KELVIN K Å", "1st 2nd ³⁄₄ ⅷ ① ⑴", "٣ ۴ ७ ๓ ９",
]

ENTITIES = [
    "&eacute;", "&EACUTE;", "&Eacute;", "&NTILDE;", "&nTILDE;", "&SZLIG;", "&amp;", "&AMP;", "&amp", "&ampx;", "&not",
    "&notin;", "&lt;3", "&quot;hi&quot;", "&#39;", "&#x27;", "&#X27;", "&#233;", "&#xE9;", "&#x1F600;", "&#0;", "&#13;",
    "&#128;", "&#129;", "&#150;", "&#55296;", "&#1114112;", "&#99999999999999999999;", "&#59;", "&#x3B;", "&#39a;",
    "&#x;", "&#;", "&nbsp;", "&hellip;", "&mdash;", "&Jscr;", "&bne;", "&fjlig;", "&ThickSpace;", "&#8203;", "&#65279;",
    "&#1;", "&#11;", "&#127;", "&#65534;", "&#xFDD0;", "&amp;amp;", "&abcdefghijklmnopqrstuvwxyz;",
]

ENCODINGS = ["latin-1", "sloppy-windows-1252", "windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
             "sloppy-windows-1253", "sloppy-windows-1254", "iso-8859-2", "macroman", "cp437", "windows-1251"]


def mojibake(text, encoding):
    return text.encode("utf-8").decode(encoding, errors="replace")


def damaged_variants(rng, text):
    out = []
    for encoding in ENCODINGS:
        broken = mojibake(text, encoding)
        out.append(broken)
        if "\xa0" in broken:
            out.append(broken.replace("\xa0", " "))
        if rng.random() < 0.3 and len(broken) > 2:
            i = rng.randrange(len(broken))
            out.append(broken[:i] + "?" + broken[i + 1:])
    out.append(mojibake(mojibake(text, "windows-1252"), "windows-1252"))
    out.append("plain words " + mojibake(text, "windows-1252") + " and " + text)
    out.append(text + " " + mojibake(text, "sloppy-windows-1251"))
    return out


def random_strings(rng, count):
    from ftfy.badness import MOJIBAKE_CATEGORIES
    from ftfy.chardata import UTF8_CLUES
    alphabet = set("aeAZ .,?!\n\t'\"-")
    for chars in list(MOJIBAKE_CATEGORIES.values()) + list(UTF8_CLUES.values()):
        i = 0
        while i < len(chars):
            if i + 2 < len(chars) and chars[i + 1] == "-":
                alphabet.update(chr(c) for c in range(ord(chars[i]), ord(chars[i + 2]) + 1))
                i += 3
            else:
                alphabet.add(chars[i])
                i += 1
    alphabet.update("ÃÂâ€™œžŸ¢√≈‚ÄβГўВЂ")
    alphabet = sorted(alphabet)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(count)]


def inputs():
    rng = random.Random(20240601)
    cases = list(PHRASES) + list(ENTITIES)
    cases += ["x " + e + " <b>" for e in ENTITIES[:8]]
    cases += ["line one &amp;\nline <two> &amp;\nthree &amp;", "&amp; <|endoftext|> &amp;", "<|startoftext|> spaced <|endoftext|>",
              "<|ENDOFTEXT|>", "&lt;|endoftext|&gt;", "<|startoftext|><|endoftext|><|startoftext|>", "a<|endoftext|>b"]
    for phrase in PHRASES:
        cases += damaged_variants(rng, phrase)
    cases += random_strings(rng, 1000)
    seen, unique = set(), []
    for case in cases:
        if case not in seen:
            seen.add(case)
            unique.append(case)
    return unique


def main():
    bpe = Bpe()
    records = []
    for text in inputs():
        fixed = ftfy.fix_text(text)
        normalized = regex.sub(r"\s+", " ", fixed).strip().lower()
        records.append({
            "input": text,
            "fixed": fixed,
            "is_bad": ftfy.badness.is_bad(text),
            "normalized": normalized,
            "words": WORD_PATTERN.findall(normalized),
            "ids": token_ids(bpe, text),
        })
    header = json.dumps({"generated_by": "tools/generate_clip_text_cases.py", "ftfy": ftfy.__version__,
                         "regex": regex.__version__, "python": sys.version.split()[0]}, ensure_ascii=False)
    lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    sys.stdout.write(header[:-1] + ', "cases": [\n' + lines + "\n]}\n")


if __name__ == "__main__":
    main()
