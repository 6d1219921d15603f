"""Gradient agreement of the policy losses along one PPO update (purejaxppo.analysis).

    python -m benchmarks.gradient_agreement            # CartPole-v1, 10 epochs, 8 seeds
    python -m benchmarks.gradient_agreement --record   # the same, into benchmarks/results/
    python -m benchmarks.gradient_agreement --epochs 4 --seeds 4 --driver importance_ratio

For each seed: one rollout, then ``epochs x num_minibatches`` Adam steps on PPO's objective with
the driver loss; at every step, the cosine similarity and norm ratio of the policy gradients of
each pair of losses. Prints the table and writes ``gradient_agreement.{png,md,json}`` to a
temporary directory, or to ``benchmarks/results/`` with ``--record`` (``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import (
    add_output_flags,
    new_figure,
    output_dir,
    preset_config,
    print_written,
    write_json,
    write_text,
)
from purejaxppo.analysis import DEFAULT_LOSSES, GradientAgreement, gradient_agreement

NAME = "gradient_agreement"


def plot(path: Path, pair_names: tuple[str, ...], cosine: np.ndarray, kl: np.ndarray,
         num_minibatches: int, title: str) -> Path:
    """Cosine similarity (mean over seeds) vs minibatch step, one line per pair; 1 - cos on a
    symmetric log scale beside it, where float32 rounding (~1e-7) is visible as the floor."""
    steps = np.arange(cosine.shape[1])
    mean = cosine.mean(axis=0)
    fig = new_figure(13, 5.6)
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for j, name in enumerate(pair_names):
        kwargs = dict(label=name, linestyle=styles[j % len(styles)], lw=1.6, color=f"C{j % 10}")
        axes[0].plot(steps, mean[:, j], **kwargs)
        axes[1].plot(steps, np.maximum(1.0 - mean[:, j], 0.0), **kwargs)
    axes[0].set_ylabel("cosine similarity of policy gradients")
    axes[1].set_ylabel("1 - cosine similarity")
    axes[1].set_yscale("symlog", linthresh=1e-7)
    for ax in axes:
        ax.set_xlabel("minibatch step of the update (theta_old at step 0)")
        for epoch_start in range(num_minibatches, len(steps), num_minibatches):
            ax.axvline(epoch_start - 0.5, color="0.85", lw=0.8, zorder=0)
        ax.grid(alpha=0.3)
    twin = axes[0].twinx()
    twin.plot(steps, kl.mean(axis=0), color="0.5", lw=1, alpha=0.6)
    twin.set_ylabel("approx KL[pi_old || pi_theta] (grey)", color="0.4")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=120)
    return path


def summary(pair_names: tuple[str, ...], cosine: np.ndarray, norm_ratio: np.ndarray,
            num_minibatches: int) -> list[dict]:
    """Per pair: agreement at step 0, over the update, in the last epoch (over every seed)."""
    rows = []
    for j, name in enumerate(pair_names):
        cos, ratio = cosine[:, :, j], norm_ratio[:, :, j]
        rows.append({
            "pair": name,
            "cos_step0_min": float(cos[:, 0].min()),
            "cos_min": float(cos.min()),
            "cos_last_epoch_mean": float(cos[:, -num_minibatches:].mean()),
            "cos_last_step_mean": float(cos[:, -1].mean()),
            "norm_ratio_step0_max_dev": float(np.abs(ratio[:, 0] - 1).max()),
            "norm_ratio_last_step_mean": float(ratio[:, -1].mean()),
        })
    return rows


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| pair | cos at step 0 (min) | cos min over update | cos last epoch (mean) | "
             "norm ratio at step 0 (max abs dev from 1) | norm ratio last step (mean) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['cos_step0_min']:.7f} | {r['cos_min']:.7f} | "
                     f"{r['cos_last_epoch_mean']:.7f} | {r['norm_ratio_step0_max_dev']:.1e} | "
                     f"{r['norm_ratio_last_step_mean']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gradient_agreement",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--epochs", type=int, default=10, help="update epochs (PPO paper: 10)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--driver", default="ppo_clip", help="the loss that moves the parameters")
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES))
    add_output_flags(parser)
    args = parser.parse_args(argv)

    config = preset_config(args.env, update_epochs=args.epochs)
    start = time.perf_counter()
    results: list[GradientAgreement] = [
        gradient_agreement(config, jax.random.key(seed), tuple(args.losses), args.driver)
        for seed in range(args.seeds)]
    seconds = time.perf_counter() - start
    first = results[0]
    cosine = np.stack([np.asarray(r.cosine) for r in results])  # [seeds, steps, pairs]
    norm_ratio = np.stack([np.asarray(r.norm_ratio) for r in results])
    kl = np.stack([np.asarray(r.approx_kl) for r in results])

    header = (f"{args.env}, driver `{args.driver}`, {args.epochs} epochs x "
              f"{config.num_minibatches} minibatches of {config.minibatch_size}, lr {config.lr:g}, "
              f"{args.seeds} seeds (one update each); approx KL at the last step "
              f"{kl[:, -1].mean():.2e} (mean over seeds)")
    rows = summary(first.pair_names, cosine, norm_ratio, config.num_minibatches)
    out = output_dir(args)
    table = markdown(rows, header)
    paths = [plot(out / f"{NAME}.png", first.pair_names, cosine, kl, config.num_minibatches,
                  "Policy gradients of each pair of losses along one PPO update: "
                  f"{header.split(';')[0]}"),
             write_text(out / f"{NAME}.md", table)]
    payload = {
        "env": args.env, "driver": args.driver, "losses": list(first.losses),
        "pairs": list(first.pair_names), "seeds": args.seeds, "seconds": round(seconds, 1),
        "config": config.to_dict(), "summary": rows,
        "cosine_mean": cosine.mean(axis=0).tolist(),
        "norm_ratio_mean": norm_ratio.mean(axis=0).tolist(),
        "approx_kl_mean": kl.mean(axis=0).tolist(),
        "device": str(jax.devices()[0]), "jax": jax.__version__,
    }
    paths.append(write_json(out / f"{NAME}.json", payload, indent=1))
    print(table)
    print_written(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
