#!/usr/bin/env python
"""Draw the small example dataset of the README's quickstart: three classes of coloured shapes.

Usage: python examples/make_shapes.py OUT [--per-class N] [--seed S]

Writes OUT/circle, OUT/square and OUT/triangle, each holding N JPEG and PNG images of varied
sizes (some portrait, some landscape), so that every resize mode has something to do.
"""

import argparse
import os
import random

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(shape: str, rng: random.Random) -> Image.Image:
    width, height = rng.randint(80, 240), rng.randint(80, 240)
    background = tuple(rng.randint(0, 90) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    pen = ImageDraw.Draw(image)
    side = rng.randint(min(width, height) // 2, min(width, height) - 8)
    left, top = rng.randint(0, width - side), rng.randint(0, height - side)
    colour = tuple(rng.randint(150, 255) for _ in range(3))
    box = (left, top, left + side, top + side)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(left + side / 2, top), (left, top + side), (left + side, top + side)],
                    fill=colour)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for shape in CLASSES:
        os.makedirs(os.path.join(args.out, shape), exist_ok=True)
        for number in range(args.per_class):
            extension = "png" if number % 4 == 0 else "jpg"
            draw(shape, rng).save(os.path.join(args.out, shape, f"{shape}_{number:03d}.{extension}"))
    print(f"wrote {args.per_class * len(CLASSES)} images in {len(CLASSES)} classes to {args.out}")


if __name__ == "__main__":
    main()
