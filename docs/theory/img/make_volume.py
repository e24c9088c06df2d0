"""Regenerate ``volume.png`` for docs/theory/volume.md: ``python docs/theory/img/make_volume.py``.

Left: a parallelogram spanned by two vectors in 3-D (a 3×2 matrix, area = gram_volume).
Middle: a parallelepiped spanned by three vectors in 3-D (a 3×3 matrix, |det|). Right: the
error of the log-volume against the condition number, QR (lowrank) vs slogdet(aᵀa).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

import lowrank


def faces_of(vectors):
    """Polygons of the parallelotope spanned by the columns of ``vectors`` (3×k)."""
    k = vectors.shape[1]
    if k == 2:
        x, y = vectors.T
        return [[0 * x, x, x + y, y]]
    x, y, z = vectors.T
    o = 0 * x
    return [[o, x, x + y, y], [z, z + x, z + x + y, z + y], [o, x, x + z, z],
            [y, y + x, y + x + z, y + z], [o, y, y + z, z], [x, x + y, x + y + z, x + z]]


def draw(ax, vectors, title, color):
    ax.add_collection3d(Poly3DCollection(faces_of(vectors), alpha=0.35, facecolor=color,
                                         edgecolor="k", linewidth=0.6))
    for v, name in zip(vectors.T, "xyz", strict=False):
        ax.quiver(0, 0, 0, *v, color="k", arrow_length_ratio=0.08)
        ax.text(*(1.08 * v), name, fontsize=11)
    vol = float(lowrank.gram_volume(vectors))
    ax.set_title(f"{title}\ngram_volume = {vol:.3f}", fontsize=10)
    ax.set(xlim=(0, 2), ylim=(0, 2), zlim=(0, 2), xlabel="e1", ylabel="e2", zlabel="e3")
    ax.view_init(elev=22, azim=-58)


def accuracy(ax):
    rng = np.random.default_rng(0)
    kappas = np.geomspace(1e1, 1e12, 12)
    ours, gram = [], []
    for kappa in kappas:
        U, _ = np.linalg.qr(rng.standard_normal((20, 4)))
        V, _ = np.linalg.qr(rng.standard_normal((4, 4)))
        s = np.geomspace(1, 1 / kappa, 4)
        a = (U * s) @ V.T
        exact = np.sum(np.log(s))  # up to the rounding of forming a (≪ the errors shown)
        ours.append(abs(float(lowrank.log_gram_volume(a)) - exact) + 1e-17)
        sign, logdet = np.linalg.slogdet(a.T @ a)
        gram.append(abs(logdet / 2 - exact) if sign > 0 else 10.0)
    ax.loglog(kappas, ours, "o-", label="lowrank (QR)")
    ax.loglog(kappas, gram, "s--", label="slogdet(aᵀa)")
    ax.loglog(kappas, 10 * 20 * np.finfo(float).eps * kappas, "k:", label="10·n·eps·κ")
    ax.set(xlabel="κ(a)", ylabel="|Δ log volume|", title="float64, 20×4")
    ax.legend(fontsize=8)


def main():
    fig = plt.figure(figsize=(13, 4.2))
    draw(fig.add_subplot(1, 3, 1, projection="3d"),
         np.array([[1.5, 0.3], [0.2, 1.2], [0.4, 1.0]]), "parallelogram: 3×2", "tab:blue")
    draw(fig.add_subplot(1, 3, 2, projection="3d"),
         np.array([[1.4, 0.3, 0.2], [0.2, 1.2, 0.3], [0.1, 0.4, 1.3]]),
         "parallelepiped: 3×3", "tab:orange")
    accuracy(fig.add_subplot(1, 3, 3))
    fig.tight_layout()
    out = Path(__file__).with_name("volume.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
