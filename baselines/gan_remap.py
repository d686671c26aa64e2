"""GAN class remapping (Data-Semantics-Protector) and a plain-classifier attack on it.

Scheme
------
1. The data owner trains, locally, an image-to-image generator ``G`` that turns images of the
   secret classes (default 0 and 1) into images of decoy classes (2 and 3): ``G(x, z)`` with
   a little noise ``z``; ``G`` = an MLP mapper into the latent space of a small VAE fitted to
   the decoy classes, followed by that VAE's frozen decoder. Loss: a conditional
   discriminator ``D(image, decoy class)`` that sees real 2s and 3s (adversarial term) plus
   a class-consistency term, the cross-entropy of the owner's own frozen 10-class
   classifier on ``G(x)`` against the decoy label. Small MLPs, CPU, seconds.
2. The owner converts its secret-class training images and uploads them with the decoy labels.
   The cloud trains an ordinary 2-vs-3 classifier on them.
3. Inference: query -> ``G`` -> cloud classifier -> decoy label -> mapped back to 0/1.

Measured: the pipeline's 0/1 accuracy vs a direct 0/1 classifier trained on plain images, the
generator's training time and size, how many generated images an independent plain
classifier reads as the intended decoy, and a PNG grid of sample conversions.

Attack
------
The cloud (or anyone holding converted images) runs a classifier trained on plain MNIST -- an
independent small CNN, not the owner's consistency classifier -- on the converted images:
how often is the original class its top-1, and, restricted to the two secret classes, how
often does it pick the right one (chance is 50%)?
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from baselines.common import (
    Stopwatch,
    TrainConfig,
    accuracy,
    load_data,
    make_model,
    network_a,
    predict,
    setup_torch,
    train,
    write_json,
)

__all__ = ["DecoyVAE", "Generator", "Discriminator", "fit_vae", "train_generator", "convert",
           "save_grid", "run"]

SCHEME = "gan-class-remapping"
NOISE = 16
LATENT = 16


class DecoyVAE(nn.Module):
    """Small VAE fitted to the decoy classes; its decoder is the generator's output stage."""

    def __init__(self, d: int = 784, hidden: int = 256, latent: int = LATENT):
        super().__init__()
        self.latent = latent
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Sigmoid())

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = F.binary_cross_entropy(self.dec(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(x)


class Generator(nn.Module):
    """Image-to-image generator ``G(x, z) = decoder(mapper([x, z]))``, output in [0,1]^784.

    The mapper (an MLP) is trained adversarially; the decoder comes from :class:`DecoyVAE`
    and stays frozen, which keeps every output on the decoy digits' manifold and makes
    the adversarial game short enough for a CPU.
    """

    def __init__(self, decoder: nn.Module, d: int = 784, hidden: int = 256,
                 noise: int = NOISE, latent: int = LATENT):
        super().__init__()
        self.noise = noise
        self.mapper = nn.Sequential(
            nn.Linear(d + noise, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, latent),
        )
        self.decoder = decoder
        for p in self.decoder.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(len(x), self.noise)
        return self.decoder(self.mapper(torch.cat([x, z], dim=1)))


class Discriminator(nn.Module):
    """Conditional MLP discriminator D(image, decoy one-hot) -> logit (real decoy image?).

    The last hidden layer also sees the batch's mean per-feature standard deviation
    (minibatch-stddev), so a generator that maps every input to one image is spotted.
    """

    def __init__(self, d: int = 784, classes: int = 2, hidden: int = 256):
        super().__init__()
        self.classes = classes
        self.body = nn.Sequential(
            nn.Linear(d + classes, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(hidden + 1, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.cat([x, F.one_hot(c, self.classes).float()], dim=1))
        spread = h.std(dim=0, unbiased=False).mean().expand(len(h), 1)
        return self.head(torch.cat([h, spread], dim=1)).squeeze(1)


def fit_vae(x: torch.Tensor, epochs: int, gen: torch.Generator, batch: int = 64) -> DecoyVAE:
    vae = DecoyVAE()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            opt.zero_grad(set_to_none=True)
            vae.loss(x[order[start:start + batch]]).backward()
            opt.step()
    vae.eval()
    return vae


def train_generator(x_secret: torch.Tensor, c_secret: torch.Tensor, x_decoy: torch.Tensor,
                    c_decoy: torch.Tensor, decoy_labels: torch.Tensor, consistency: nn.Module,
                    epochs: int, gen: torch.Generator, vae_epochs: int = 15, batch: int = 64,
                    lam: float = 1.0, lr: float = 2e-4) -> tuple[Generator, list[dict]]:
    """Fit the decoy VAE, then train the mapper: adversarial + class-consistency loss.

    ``c_secret``/``c_decoy``: index 0/1 of the pair (secret class i maps to decoy class i);
    ``decoy_labels``: the decoy classes' labels in ``consistency``'s 10-way output.
    The discriminator uses one-sided label smoothing (real target 0.9).
    """
    vae = fit_vae(x_decoy, vae_epochs, gen, batch)
    g, d = Generator(vae.dec), Discriminator()
    opt_g = torch.optim.Adam(g.mapper.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    consistency.eval()
    for p in consistency.parameters():
        p.requires_grad_(False)
    history = []
    n, m = len(x_secret), len(x_decoy)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        sums = {"d": 0.0, "adv": 0.0, "cls": 0.0}
        steps = 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xs, cs = x_secret[idx], c_secret[idx]
            ridx = torch.randint(0, m, (len(idx),), generator=gen)
            xr, cr = x_decoy[ridx], c_decoy[ridx]
            fake = g(xs)
            # discriminator: real decoys vs converted secrets (with their target class)
            opt_d.zero_grad(set_to_none=True)
            loss_d = (bce(d(xr, cr), torch.full((len(idx),), 0.9))
                      + bce(d(fake.detach(), cs), torch.zeros(len(idx))))
            loss_d.backward()
            opt_d.step()
            # generator: fool D and be read as the decoy class by the owner's classifier
            opt_g.zero_grad(set_to_none=True)
            adv = bce(d(fake, cs), torch.ones(len(idx)))
            cls = F.cross_entropy(consistency(fake), decoy_labels[cs])
            (adv + lam * cls).backward()
            opt_g.step()
            sums["d"] += float(loss_d.detach())
            sums["adv"] += float(adv.detach())
            sums["cls"] += float(cls.detach())
            steps += 1
        history.append({"epoch": epoch + 1, **{k: round(v / max(steps, 1), 4) for k, v in sums.items()}})
    g.eval()
    return g, history


@torch.no_grad()
def convert(g: Generator, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The owner's conversion of secret-class images (fixed noise seed for reproducibility)."""
    z = torch.randn(len(x), g.noise, generator=torch.Generator().manual_seed(seed))
    return torch.cat([g(x[i:i + 4096], z[i:i + 4096]) for i in range(0, len(x), 4096)])


def save_grid(path: str | Path, rows: list[tuple[str, torch.Tensor]], ncols: int = 10) -> None:
    """PNG grid: one labelled row of ``ncols`` 28x28 images per entry of ``rows``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * 0.9, len(rows) * 1.0))
    for r, (label, imgs) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c].reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pair_index(y: torch.Tensor, classes: tuple[int, int]) -> torch.Tensor:
    return (y == classes[1]).long()


def run(dataset: str = "mnist", train_limit: int | None = 20000, epochs: int = 3,
        seed: int = 0, json_out=None, test_limit: int | None = None,
        secret: tuple[int, int] = (0, 1), decoy: tuple[int, int] = (2, 3),
        gan_epochs: int = 10, vae_epochs: int = 15, png_out: str | Path | None = None) -> dict:
    """Train G, convert, train the cloud's decoy classifier, measure pipeline and attack."""
    gen = setup_torch(seed)
    data = load_data(dataset, train_limit, test_limit)
    cfg = TrainConfig(epochs=epochs)
    sec, dec = data.subset(secret), data.subset(decoy)
    cs_tr, cs_te = _pair_index(sec.y_train, secret), _pair_index(sec.y_test, secret)
    cd_tr = _pair_index(dec.y_train, decoy)

    # the owner's consistency classifier (10 classes, plain data, stays with the owner)
    torch.manual_seed(seed)
    owner_clf = network_a()
    with Stopwatch() as t_owner:
        train(owner_clf, data.x_train, data.y_train, cfg, gen)

    torch.manual_seed(seed)
    with Stopwatch() as t_gan:
        g, history = train_generator(sec.x_train, cs_tr, dec.x_train, cd_tr,
                                     torch.tensor(decoy), owner_clf, gan_epochs, gen, vae_epochs)
    g_params = sum(p.numel() for p in g.parameters())
    g_trained = sum(p.numel() for p in g.mapper.parameters())

    with Stopwatch() as t_conv:
        conv_train = convert(g, sec.x_train, seed)
    conv_test = convert(g, sec.x_test, seed + 1)

    # the cloud: an ordinary 2-vs-3 classifier on what it receives
    torch.manual_seed(seed)
    cloud = network_a(classes=2)
    with Stopwatch() as t_cloud:
        train(cloud, conv_train, cs_tr, cfg, gen)
    pipeline_acc = accuracy(cloud, conv_test, cs_te)

    # reference: the direct 0/1 classifier a cloud would train on plain data
    torch.manual_seed(seed)
    direct = network_a(classes=2)
    with Stopwatch() as t_direct:
        train(direct, sec.x_train, cs_tr, cfg, gen)
    direct_acc = accuracy(direct, sec.x_test, cs_te)

    # attack: an independent plain-MNIST CNN looks at the converted test images
    torch.manual_seed(seed + 17)
    attacker = make_model("cnn")
    train(attacker, data.x_train, data.y_train, cfg, gen)
    att_logits = predict(attacker, conv_test)
    top1 = att_logits.argmax(1)
    orig = torch.tensor(secret)[cs_te]
    target = torch.tensor(decoy)[cs_te]
    restricted = att_logits[:, list(secret)].argmax(1)
    attack = {
        "attacker_plain_accuracy": accuracy(attacker, data.x_test, data.y_test),
        "top1_is_original_class": float((top1 == orig).float().mean()),
        "top1_is_decoy_class": float((top1 == target).float().mean()),
        "secret_pair_accuracy": float((restricted == cs_te).float().mean()),
        "chance_secret_pair": 0.5,
        "top1_histogram": torch.bincount(top1, minlength=10).tolist(),
    }

    if png_out is not None:
        picks = torch.cat([torch.nonzero(cs_te == i).squeeze(1)[:5] for i in (0, 1)])
        real_decoys = torch.cat([dec.x_test[_pair_index(dec.y_test, decoy) == i][:5] for i in (0, 1)])
        save_grid(png_out, [
            (f"secret {secret[0]}/{secret[1]} (owner)", sec.x_test[picks]),
            ("converted (cloud sees)", conv_test[picks]),
            (f"real {decoy[0]}/{decoy[1]}", real_decoys),
        ])

    result = {
        "scheme": SCHEME,
        "dataset": dataset,
        "secret_classes": list(secret),
        "decoy_classes": list(decoy),
        "train_size": len(sec.x_train),
        "test_size": len(sec.x_test),
        "epochs": epochs,
        "gan_epochs": gan_epochs,
        "seed": seed,
        "accuracy": pipeline_acc,
        "accuracy_plain": direct_acc,
        "accuracy_pipeline": pipeline_acc,
        "accuracy_direct": direct_acc,
        "decoy_realism": attack["top1_is_decoy_class"],
        "generator": {
            "parameters": int(g_params),
            "adversarially_trained_parameters": int(g_trained),
            "vae_epochs": vae_epochs,
            "train_seconds": round(t_gan.seconds, 3),
            "owner_classifier_seconds": round(t_owner.seconds, 3),
            "convert_seconds": round(t_conv.seconds, 4),
            "history": history,
        },
        "train_seconds_cloud": round(t_cloud.seconds, 3),
        "train_seconds_direct": round(t_direct.seconds, 3),
        "time_ratio_vs_plain": round(
            (t_gan.seconds + t_owner.seconds + t_conv.seconds + t_cloud.seconds)
            / max(t_direct.seconds, 1e-9), 3),
        "png": str(png_out) if png_out is not None else None,
        "cloud_sees": f"synthetic {decoy[0]}/{decoy[1]} images labelled {decoy[0]}/{decoy[1]}",
        "attack": attack,
        "attack_summary": (
            f"plain CNN top-1 = original class on {attack['top1_is_original_class']:.1%}, "
            f"decoy on {attack['top1_is_decoy_class']:.1%}; "
            f"{secret[0]}-vs-{secret[1]} guess {attack['secret_pair_accuracy']:.1%} (chance 50%)"),
        "trust": "generator and class mapping kept by the data owner; one cloud",
    }
    write_json(result, json_out)
    return result
