"""Command-line options that make a run tiny: small networks and every periodic event within a few steps."""

TINY_RUN = (
    "--data digits --width 8 --latent-dim 8 --batch-size 32 --eval-every 3 --image-every 3 --ckpt-every 3"
).split()
