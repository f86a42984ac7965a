"""A small CNN whose conv features are pooled by lfagg.torch.SoftBoW and classified,
trained end to end on CIFAR-10 on the CPU, against the same network with the pooling
layer frozen at its K-Means initialisation.

Both networks start identical: the same random convolutions (torch.manual_seed) and a
SoftBoW layer initialised from lfagg.BagOfWords (K-Means and the "auto" gamma) fitted on
the conv features of the untrained network. Then both train with Adam for the same
epochs on the same batches; the frozen one keeps the layer's centres, precisions and gamma
fixed (its convolutions and classifier still learn), the other learns them too, with the
gradient flowing through the layer into the convolutions (dJ/dF).

    python examples/torch_cifar10.py                       # ../shared/data/cifar10_subset.npz
    python examples/torch_cifar10.py --data cifar.npz --train 20000 --epochs 10

Prints the test accuracy after each epoch and the time per epoch of each network.
Needs torch (pip install "lfagg[torch]").
"""
import argparse
import os
import time

import numpy as np

try:
    import torch
except ImportError:
    raise SystemExit('this example needs torch: pip install "lfagg[torch]"') from None

import lfagg
import lfagg.torch as lt
from lfagg.datasets import load_cifar10

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10_subset.npz")


class ConvSoftBoW(torch.nn.Module):
    """conv-relu-pool x 2, a 1x1 conv to ``dim`` channels: an 8 x 8 grid of 64 local
    features per image, pooled by SoftBoW into K numbers, then a linear classifier."""

    def __init__(self, n_codewords, dim=64, n_classes=10):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, dim, 1))
        self.pool = lt.SoftBoW(n_codewords, dim)
        self.classifier = torch.nn.Sequential(torch.nn.BatchNorm1d(n_codewords),
                                              torch.nn.Linear(n_codewords, n_classes))

    def local_features(self, images):
        """(B, 3, 32, 32) -> (B * 64, dim) features and (B + 1,) offsets: each image a bag."""
        maps = self.features(images)
        per_image = maps.shape[2] * maps.shape[3]
        offsets = torch.arange(0, (len(images) + 1) * per_image, per_image)
        return maps.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1]), offsets

    def forward(self, images):
        return self.classifier(self.pool(*self.local_features(images)))


def to_tensor(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)


def accuracy(model, images, labels, batch=500):
    model.eval()
    with torch.no_grad():
        hits = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                   for i in range(0, len(images), batch))
    model.train()
    return hits / len(images)


def at_least(minimum):
    """An argparse type: an integer >= minimum (a usage error otherwise, not a traceback)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--train", type=at_least(2), default=10000, help="training images (drawn at random)")
    parser.add_argument("--test", type=at_least(1), default=2000, help="test images (drawn at random)")
    parser.add_argument("--codewords", type=at_least(1), default=64)
    parser.add_argument("--epochs", type=at_least(1), default=5)
    parser.add_argument("--batch", type=at_least(2), default=64, help="images per step (BatchNorm needs two)")
    parser.add_argument("--seed", type=at_least(0), default=0)
    args = parser.parse_args()

    try:
        data = load_cifar10(args.data)
    except ValueError as exc:
        parser.error(str(exc))
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(len(data["train_images"]))[:args.train]
    test = rng.permutation(len(data["test_images"]))[:args.test]
    x_train, y_train = to_tensor(data["train_images"][train]), torch.from_numpy(data["train_labels"][train])
    x_test, y_test = to_tensor(data["test_images"][test]), torch.from_numpy(data["test_labels"][test])
    print(f"CIFAR-10: {len(x_train)} training, {len(x_test)} test images; {torch.get_num_threads()} threads")

    torch.manual_seed(args.seed)
    learned = ConvSoftBoW(args.codewords)
    with torch.no_grad():  # the K-Means start, on the untrained network's conv features
        features, offsets = learned.local_features(x_train[:1000])
    codebook = lfagg.BagOfWords(args.codewords, assignment="soft", random_state=args.seed)
    codebook.fit(lfagg.Bags(features.numpy(), offsets.numpy()))
    learned.pool = lt.SoftBoW.from_estimator(codebook, learn_gamma=True)
    frozen = ConvSoftBoW(args.codewords)
    frozen.load_state_dict(learned.state_dict())
    frozen.pool.requires_grad_(False)

    models = {"SoftBoW learned": learned, "SoftBoW frozen at K-Means": frozen}
    optimizers = {name: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
                  for name, m in models.items()}
    seconds = {name: 0.0 for name in models}
    for epoch in range(1, args.epochs + 1):
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for name, model in models.items():
            start = time.perf_counter()
            for i in range(0, len(order), args.batch):
                batch = order[i:i + args.batch]
                if len(batch) < 2:  # a last batch of one image: BatchNorm cannot train on it
                    continue
                optimizers[name].zero_grad()
                torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
                optimizers[name].step()
            seconds[name] += time.perf_counter() - start
        print(f"epoch {epoch}: " + ", ".join(f"{name} {accuracy(m, x_test, y_test):.3f}" for name, m in models.items()),
              flush=True)
    for name in models:
        print(f"{name}: {seconds[name] / args.epochs:.1f} s per epoch")


if __name__ == "__main__":
    main()
