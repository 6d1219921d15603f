"""The benchmarks whose recorded tables were measured with Breakout-MinAtar's 2x256 MLP still
build that MLP now that the preset uses the CNN, and the GPU benchmark measures the preset."""

from __future__ import annotations

from benchmarks import gpu, policy_losses, throughput
from benchmarks.common import preset_config


def test_breakout_rows_keep_the_network_they_were_recorded_with():
    assert preset_config("Breakout-MinAtar").network == "cnn"
    for rule in policy_losses.RULES:
        config = policy_losses.make_config("Breakout-MinAtar", rule, 1_000_000)
        assert config.network == "mlp" and config.hidden_sizes == (256, 256), rule
    assert policy_losses.make_config("CartPole-v1", "ppo_clip", 500_000).network == "mlp"

    (breakout,) = [s for s in throughput.settings() if s.env == "Breakout-MinAtar"]
    assert "mlp" in breakout.name and breakout.overrides == {"network": "mlp"}
    config = preset_config(breakout.env, **breakout.overrides)
    flops = throughput.flops_per_env_step(config, 400, 3)
    assert flops > 0  # counted: the roofline row

    cases = [c for c in gpu.CASES if c.env == "Breakout-MinAtar"]
    assert len(cases) == 2 and all(c.config is None for c in cases)  # the preset: the CNN
