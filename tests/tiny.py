"""Command-line options that make a run tiny: small networks and every periodic event within a few steps."""

TINY_RUN = (
    "--data digits --width 8 --latent-dim 8 --batch-size 32 --eval-every 3 --image-every 3 --ckpt-every 3"
).split()

# For tests that compare numbers byte for byte, which holds on the CPU. On an H100 a tiny GAN's metrics.csv
# with `--data-on-device on` and `off` differed from the first logged row (not isolated; cuDNN's kernels are
# not bitwise reproducible by default), so these runs stay on the CPU wherever the suite runs.
ON_CPU = ["--accelerator", "cpu"]
