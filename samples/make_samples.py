"""Train the bundled sample models on scikit-learn's digits data and export them to ONNX.

The samples are real trained networks, not random matrices, so that their audits differ for the
reasons the method is about: how far training went and whether capacity collapsed. The script is
deterministic on one machine (fixed seeds, one CPU thread, torch 2.13): rerunning it there
rewrites the same files; another CPU's torch kernels round differently (samples/README.md).

    python samples/make_samples.py            # writes samples/*.onnx, prints test accuracies

Each model is trained on a fixed 80/20 split of the 1797 8x8 digit images (pixels scaled to
[0, 1]) and exported with torch.onnx.export (dynamo exporter, weights inside the file).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0


@dataclass
class Recipe:
    """How one sample is built: the network, the optimiser, how long it trains."""

    name: str
    what: str
    build: Callable[[], nn.Module]
    optimiser: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    epochs: int
    batch_size: int
    max_steps: int | None = None  # stop early (the under-trained sample)
    image_input: bool = False


class MLP(nn.Module):
    """64 -> 256 -> 256 -> 256 -> 10 with ReLU: big enough square layers for a spectral fit."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = torch.relu(self.fc3(x))
        return self.out(x)


class CNN(nn.Module):
    """Two 3x3 convolutions (the first followed by BatchNorm, folded into it by the exporter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.out(x)


RECIPES = [
    Recipe(
        "digits_mlp_good",
        "MLP trained to convergence with SGD and momentum",
        MLP,
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9),
        epochs=40,
        batch_size=32,
    ),
    Recipe(
        "digits_mlp_undertrained",
        "the same MLP after 10 plain SGD steps: weights still close to their random start",
        MLP,
        lambda p: torch.optim.SGD(p, lr=0.3),
        epochs=1,
        batch_size=144,
        max_steps=10,
    ),
    Recipe(
        "digits_mlp_collapsed",
        "the same MLP with a huge decoupled weight decay (AdamW, wd=2): most hidden units die and "
        "their weights decay to exactly zero, so the layers lose rank",
        MLP,
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=2.0),
        epochs=40,
        batch_size=32,
    ),
    Recipe(
        "digits_cnn_good",
        "small CNN (conv 32, BatchNorm, conv 64, dense 128) trained with Adam",
        CNN,
        lambda p: torch.optim.Adam(p, lr=1e-3),
        epochs=40,
        batch_size=32,
        image_input=True,
    ),
]


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits data, pixels in [0, 1], fixed stratified 80/20 split."""
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    return torch.from_numpy(Xtr), torch.from_numpy(ytr), torch.from_numpy(Xte), torch.from_numpy(yte)


def shaped(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    return x.reshape(-1, 1, 8, 8) if recipe.image_input else x


def train(recipe: Recipe, data: tuple) -> tuple[nn.Module, float]:
    """Train one recipe from seed SEED; returns the model (eval mode) and its test accuracy."""
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(SEED)
    model = recipe.build()
    opt = recipe.optimiser(list(model.parameters()))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    steps = 0
    for _epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(Xtr), generator=gen)
        for start in range(0, len(Xtr), recipe.batch_size):
            if recipe.max_steps is not None and steps >= recipe.max_steps:
                break
            idx = order[start : start + recipe.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(shaped(Xtr[idx], recipe)), ytr[idx])
            loss.backward()
            opt.step()
            steps += 1
    model.eval()
    with torch.no_grad():
        accuracy = float((model(shaped(Xte, recipe)).argmax(1) == yte).float().mean())
    return model, accuracy


def export(model: nn.Module, recipe: Recipe, path: str) -> None:
    """ONNX via the dynamo exporter, weights inside the file, batch dimension dynamic.

    The exporter records each node's Python stack trace (absolute paths of this checkout) in
    node metadata: those entries are dropped so the files do not depend on where the script ran.
    The rest of the metadata stays (it tells that BatchNorm was folded into conv1).
    """
    example = torch.zeros((2, 1, 8, 8) if recipe.image_input else (2, 64))
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        external_data=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    proto = program.model_proto
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(proto, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="folder for the .onnx files (default: samples/)")
    parser.add_argument("--only", nargs="*", help="build only these samples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data = load_data()
    print("| sample | test accuracy | what |")
    print("| --- | --- | --- |")
    for recipe in RECIPES:
        if args.only and recipe.name not in args.only:
            continue
        model, accuracy = train(recipe, data)
        export(model, recipe, os.path.join(args.out, recipe.name + ".onnx"))
        print(f"| `{recipe.name}.onnx` | {accuracy:.1%} | {recipe.what} |", flush=True)


if __name__ == "__main__":
    main()
