"""Train an exported auxsearch design in your own loop.

    python docs/examples/train_exported.py best.yaml --epochs 5

Everything auxsearch-specific is three calls: load_design, build and
train_step (which runs the modules one after another, each with its own
backward). The data, the loop and the evaluation are yours. As in a search,
the loop watches the validation split; test is scored once, at the end.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

import auxsearch
from auxsearch.tasks import load_image_data


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("design")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    design = auxsearch.load_design(args.design)          # a networkx DiGraph, plain data
    data = load_image_data(design.graph.get("data", {"name": "digits"}))
    model = auxsearch.build(design)                      # an nn.Module
    model.set_normalization(data.mean, data.std)
    recipe = auxsearch.TrainConfig(**{**design.graph.get("train", {}), "epochs": args.epochs})
    train = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True)
    opt, sched = auxsearch.make_optimizer(model, recipe, total_steps=args.epochs * len(train))

    for epoch in range(args.epochs):
        model.train()
        for images, labels in train:
            _, losses = auxsearch.train_step(model, opt, images, labels)  # one loss per module
            sched.step()
        scores = auxsearch.evaluate(model, DataLoader(data.val, batch_size=512), torch.device("cpu"))
        accuracy = scores["accuracy"]  # a dict: every metric of the design's task
        print(f"epoch {epoch + 1}: local losses {[round(float(v), 3) for v in losses]}, val accuracy {accuracy:.4f}")
    test = auxsearch.evaluate(model, DataLoader(data.test, batch_size=512), torch.device("cpu"))["accuracy"]
    print(f"test accuracy {test:.4f}")
    return test


if __name__ == "__main__":
    main()
