"""Train this project's teacher with plain PyTorch (nothing of kdtune) and save its state_dict.

It normalizes its inputs itself, (x - 0.1307) / 0.3081 on pixels in [0, 1]: the study tells kdtune so
(``teacher.preprocessing``), and kdtune feeds the teacher exactly that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from my_models.nets import build_teacher

MEAN, STD = 0.1307, 0.3081


def load(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, name in enumerate(classes):
        for png in sorted((folder / name).glob("*.png")):
            xs.append(np.asarray(Image.open(png), dtype=np.float32) / 255.0)
            ys.append(label)
    return torch.from_numpy(np.stack(xs)).unsqueeze(1), torch.tensor(ys)  # (N, 1, 28, 28), (N,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("checkpoints/teacher.pt"))
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = load(args.data / "train")
    model = build_teacher()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(args.epochs):
        for idx in torch.randperm(len(y)).split(32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model((x[idx] - MEAN) / STD), y[idx])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    x_test, y_test = load(args.data / "test")
    with torch.no_grad():
        accuracy = (model((x_test - MEAN) / STD).argmax(1) == y_test).float().mean().item()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"teacher test accuracy {accuracy:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
