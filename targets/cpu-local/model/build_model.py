"""Build a small random-weight Qwen2 causal LM and a locally trained byte-level BPE tokenizer.

Usage: python build_model.py --out DIR [--seed 0]

No network and no hub downloads: the corpus is generated from the seed, the tokenizer is trained on
it, and the weights are seeded random. The same seed and library versions give byte-identical files.
The result is built in a temp folder beside DIR and renamed into place, so a killed build never
leaves a half model at DIR. See README.md beside this file for the sizes chosen.
"""
# ruff: noqa: E402  (the environment below must be set before transformers is imported)

import argparse
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

# Set before transformers is imported: never reach for a hub, and no telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import numpy as np
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

VOCAB_SIZE = 8192
EOS = "<|endoftext|>"  # the only special token: end of text, padding, and (as in Qwen2) bos in the config
# transformers 5 loads any model_type "qwen2" folder with Qwen2Tokenizer, which rebuilds the pipeline
# from vocab + merges in code, ignoring tokenizer.json's. So train with exactly that pipeline: this
# regex, NFC, byte-level without its own regex. Otherwise the served tokenizer would differ from the
# trained one.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
               r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
PRINTABLE = string.printable[:95]  # ASCII 32..126 reordered: digits, letters, punctuation, space

# The same rotary base in both transformers majors the images carry (5 with vLLM 0.32, 4 with vLLM 0.11.0).
ROPE = ({"rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
        if int(transformers.__version__.split(".")[0]) >= 5 else {"rope_theta": 1_000_000.0})

T0 = time.monotonic()


def say(phase: str, detail: str) -> None:
    print(f"[build_model] {phase}: {detail} ({time.monotonic() - T0:.1f}s)", flush=True)


def corpus(seed: int) -> list[str]:
    """Lines of seeded text: mostly uniform random printable ASCII (what the benchmark prompts are),
    plus pseudo-words with spaces, punctuation and numbers so text-like input also tokenizes sensibly."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    words = ["".join(rng.choices(letters, k=rng.randint(1, 9))) for _ in range(3000)]
    weights = [1 / (i + 1) for i in range(len(words))]  # Zipf-like, as in real text
    lines = []
    for _ in range(6000):  # 1.2 MB (1.8 MB in all): fills every merge, trains in ~1.5 s
        lines.append("".join(rng.choices(PRINTABLE, k=200)))
    for _ in range(3000):
        out = []
        for w in rng.choices(words, weights, k=30):
            r = rng.random()
            if r < 0.1:
                w = w.capitalize()
            elif r < 0.15:
                w = str(rng.randint(0, 99999))
            out.append(w + (rng.choice(",.;:!?") if rng.random() < 0.1 else ""))
        lines.append(" ".join(out))
    return lines


def train_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # adds no bos/eos, as Qwen2
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any input encodes
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    if tok.get_vocab_size() != VOCAB_SIZE:
        sys.exit(f"tokenizer has {tok.get_vocab_size()} tokens, not {VOCAB_SIZE}: grow the corpus")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=EOS,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,  # decode must give back the exact text
    )


def build_model(eos_id: int, seed: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=6,
        num_attention_heads=12,  # head_dim = 768 / 12 = 64
        num_key_value_heads=4,  # GQA 3:1
        max_position_embeddings=4096,  # 1024-token prompts + output, with room
        max_window_layers=6,
        **ROPE,
        # Untied: a separate lm_head as in Qwen2-7B and up, and it brings the size to ~63M params.
        tie_word_embeddings=False,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )
    model = Qwen2ForCausalLM(config)
    # Our own init, not torch's: torch's normal_ gives different bits with and without AVX2 (tried:
    # ATEN_CPU_CAPABILITY=default vs avx2). Uniform float32 draws from numpy's PCG64 are exact integer
    # arithmetic, so they are the same on any CPU. Same std as the usual normal(0, 0.02) init.
    rng = np.random.default_rng(seed)
    half_width = np.float32(0.02 * 3**0.5)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # sorted: a fixed draw order
            if p.ndim == 2:  # embeddings and projections
                u = rng.random(p.shape, dtype=np.float32)
                p.copy_(torch.from_numpy((u - np.float32(0.5)) * (2 * half_width)))
            else:  # RMSNorm gains 1, biases 0
                p.fill_(1.0 if "norm" in name else 0.0)
        # EOS logit exactly 0 while the best of the other 8191 is ~+2: greedy decoding never stops
        # early, so benchmarks get the output length they ask for.
        model.lm_head.weight[eos_id].zero_()
    model = model.to(torch.bfloat16)  # cast once at the end: bf16 rounding is exact and portable
    model.config.dtype = torch.bfloat16
    # Only the token ids: no temperature/top_p/do_sample, so vLLM's defaults (or the request) rule.
    model.generation_config = GenerationConfig(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to create (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    hf_logging.disable_progress_bar()  # our one line per phase is the progress report
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Sweep leftovers of killed builds of this folder (builds of one DIR are not run concurrently).
    for old in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        lines = corpus(args.seed)
        say("corpus", f"{len(lines)} lines, {sum(map(len, lines)) / 1e6:.1f} MB")

        tokenizer = train_tokenizer(lines)
        eos_id = tokenizer.convert_tokens_to_ids(EOS)
        say("tokenizer", f"{len(tokenizer)} tokens, {EOS} = {eos_id}")

        model = build_model(eos_id, args.seed)
        say("weights", f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, bfloat16")

        model.save_pretrained(tmp)  # transformers 5 writes only safetensors (model.safetensors)
        tokenizer.save_pretrained(tmp)
        # mkdtemp makes the folder 0700 and the safetensors file comes out 0600; the serving
        # container may run as another user, so make everything world-readable.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():  # replace: move the old one aside first, so DIR is never half-written
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            out.rename(trash / "old")
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
        size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        say("save", f"{out} ({size:.0f} MB)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    main()
