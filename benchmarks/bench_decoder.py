"""Per-image work of ``--decoder fast`` against the Pillow floor and TensorFlow's first pass.

Usage: python benchmarks/bench_decoder.py --corpus /work/corpus [--repeat 5]

For each set of the corpus it runs, ``repeat`` times in turn: the floor (``floor.py``, 2
processes), imgshard's per-image code with ``--decoder pillow`` and ``--decoder fast``
(``decode_work.py``, 2 processes, 224x224 float16) and TensorFlow's first pass over
``image_dataset_from_directory`` after import (``decode_work.py tensorflow``, skipped with a
message without TensorFlow), and the same work at imgshard's quality, with an antialiased
resize (``decode_work.py tensorflow-antialias``). Each figure is the ratio of the best rates;
per wall second, and per CPU second of all the processes (threads included), which other load
on a shared machine disturbs less. It also prints the fast decoder's PSNR against a full Pillow decode + Pillow's
bilinear filter over every ``PSNR_EVERY``-th image of the set.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from harness import (SETS, Figure, at_least, benchmark_command, corpus_option, corpus_set,
                     print_figures, repeat_option, run_timed, scratch_option, script_command)

FLOOR_GOAL = 1.3
TENSORFLOW_GOAL = 1.0
PSNR_EVERY = 10


def best_reports(commands: dict[str, list[str]], repeat: int) -> dict[str, dict[str, float]]:
    """Run the commands ``repeat`` times, interleaved; keep each one's best wall and CPU time."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, argv in commands.items():
            report = run_timed(argv).report()
            kept = best.setdefault(name, dict(report))
            for key in ("seconds", "cpu_seconds"):
                kept[key] = min(kept[key], report[key])
    return best


def set_figures(corpus: str, name: str, repeat: int) -> list[Figure]:
    src = corpus_set(corpus, name)
    commands = {"floor": [*script_command("floor.py"), src, "--workers", "2"]}
    for kind in ("imgshard-pillow", "imgshard-fast"):
        commands[kind] = [*script_command("decode_work.py"), src, kind, "--workers", "2"]
    if importlib.util.find_spec("tensorflow"):
        for kind in ("tensorflow", "tensorflow-antialias"):
            commands[kind] = [*script_command("decode_work.py"), src, kind]
    best = best_reports(commands, repeat)

    def rate(run: str, per: str) -> float:
        return best[run]["images"] / best[run][per]

    figures = []
    for per, unit in (("seconds", "images/s"), ("cpu_seconds", "images/cpu-s")):
        figures += [
            Figure("fast work vs floor", name, rate("imgshard-fast", per), rate("floor", per),
                   unit, f">= {FLOOR_GOAL}x", at_least(FLOOR_GOAL)),
            Figure("pillow work vs floor", name, rate("imgshard-pillow", per),
                   rate("floor", per), unit, "context", None)]
        if "tensorflow" in best:
            figures += [
                Figure("fast work vs TF first pass", name, rate("imgshard-fast", per),
                       rate("tensorflow", per), unit, f">= {TENSORFLOW_GOAL}x",
                       at_least(TENSORFLOW_GOAL)),
                Figure("fast work vs TF antialiased", name, rate("imgshard-fast", per),
                       rate("tensorflow-antialias", per), unit, "context", None)]
    return figures


def fast_psnr(src: str) -> str:
    """The fast decoder's PSNR (min, mean) over a sample of ``src`` against a full Pillow
    decode, turned upright and resized with Pillow's bilinear filter to 224x224."""
    from PIL import Image, ImageOps

    from imgshard.config import BuildConfig
    from imgshard.transform import load_pixels
    from naive import list_jpegs

    config, values = BuildConfig(decoder="fast"), []
    for path in list_jpegs(src)[::PSNR_EVERY]:
        with Image.open(path) as image:
            reference = ImageOps.exif_transpose(image).convert("RGB").resize(
                (224, 224), Image.Resampling.BILINEAR)
        error = np.mean((load_pixels(path, config).astype(np.float64)
                         - np.asarray(reference, dtype=np.float64)) ** 2)
        values.append(math.inf if error == 0 else 10 * math.log10(255 ** 2 / error))
    return f"min {min(values):.1f} dB, mean {np.mean(values):.1f} dB over {len(values)} images"


def decoder_figures(corpus: str, repeat: int) -> tuple[list[Figure], list[str]]:
    figures, notes = [], []
    for name in SETS:
        figures += set_figures(corpus, name, repeat)
        notes.append(f"fast decoder PSNR vs Pillow ({name}): {fast_psnr(corpus_set(corpus, name))}")
    if not importlib.util.find_spec("tensorflow"):
        notes.append("fast work vs TF first pass: not measured (TensorFlow is not installed)")
    return figures, notes


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the decoder figures as a table."""
    print_figures(scratch, lambda folder: decoder_figures(corpus, repeat))


if __name__ == "__main__":
    main()
