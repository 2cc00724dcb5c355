"""DCGAN, non-saturating or hinge loss, an optional generator EMA; one D, then one G update an iteration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightning_genae.models.adversarial import ImageAdversarialModule, discriminator_loss, generator_loss
from lightning_genae.models.base import adam, set_sgd_rate
from lightning_genae.models.options import GANOptions
from lightning_genae.nets.conv import ConvDecoder, ConvDiscriminator, init_dcgan_weights
from lightning_genae.nets.mlp import MaxoutDiscriminator, MLPDecoder, init_linear

# The GAN paper's MNIST generator: two hidden ReLU layers of this many units.
PAPER_GENERATOR_HIDDEN = 1200
# goodfeli/adversarial mnist.yaml's SGD: the learning rate divided by the decay after every update down to a
# floor (pylearn2's ExponentialDecay), and the momentum raised linearly from epoch 1 to 250.
PAPER_LR, PAPER_LR_DECAY, PAPER_MIN_LR = 0.1, 1.000004, 1e-6
PAPER_MOMENTUM, PAPER_FINAL_MOMENTUM, PAPER_MOMENTUM_SATURATE = 0.5, 0.7, 250


def paper_learning_rate(iteration: int) -> float:
    """The learning rate of the paper's update number `iteration` (from 0): 0.1 / 1.000004^iteration."""
    return max(PAPER_LR / PAPER_LR_DECAY**iteration, PAPER_MIN_LR)


def paper_momentum(epoch: int) -> float:
    """The momentum during epoch `epoch` (from 0): 0.5 in the first, rising linearly to 0.7 in the 250th."""
    ramp = min(1.0, epoch / (PAPER_MOMENTUM_SATURATE - 1))
    return PAPER_MOMENTUM + (PAPER_FINAL_MOMENTUM - PAPER_MOMENTUM) * ramp


class GANModule(ImageAdversarialModule):
    """DCGAN's shared conv generator and discriminator, or `--gan-nets paper`: the GAN paper's MNIST MLPs."""

    gives_real_logits = True

    options_type = GANOptions
    options: GANOptions

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        super().__init__(image_shape, **options)
        if self.options.gan_nets == "paper":
            # goodfeli/adversarial mnist.yaml: weights U(-irange, irange); the generator's output biases
            # start at the logits of the training pixels' means (`on_train_start`).
            self.generator = MLPDecoder(
                self.image_shape, self.latent_dim, hidden=PAPER_GENERATOR_HIDDEN, output="sigmoid"
            )
            self.discriminator = MaxoutDiscriminator(self.image_shape)
            self.generator.apply(init_linear("uniform", 0.05))
            self.discriminator.apply(init_linear("uniform", 0.005))
        else:
            width = self.options.width
            self.generator = ConvDecoder(self.image_shape, self.latent_dim, width=width, output="tanh")
            self.discriminator = ConvDiscriminator(
                self.image_shape, width=width, spectral_norm=self.options.spectral_norm
            )
            self.generator.apply(init_dcgan_weights)
            if not self.options.spectral_norm:
                self.discriminator.apply(init_dcgan_weights)
        self.generator_ema: AveragedModel | None = None
        if self.options.ema > 0:
            # `update_ema` copies batch-norm statistics: an average of running averages lags far behind them.
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(self.options.ema), use_buffers=False
            )
            # The average is not trained: keep it out of DDP's gradient bookkeeping.
            self.generator_ema.requires_grad_(False)

    def on_train_start(self) -> None:
        super().on_train_start()
        # Called after a resume has restored the step count (on_fit_start is too early for that): only a run's
        # first start sets the paper's output biases, a resumed one keeps its trained ones.
        if self.options.gan_nets == "paper" and self.trainer.global_step == 0:
            self.generator.start_at_pixel_means(self.training_pixel_means())

    def decode(self, latents: Tensor) -> Tensor:
        """Generator output; the EMA generator when one is kept, as is usual for evaluation."""
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        return generator(latents)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.options.gan_training == "paper":
            self.paper_training_step(batch)
            return
        real, _ = batch
        kind = self.options.gan_loss
        opt_d, opt_g = self.optimizers()
        n = real.size(0)

        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                fake = self.generator(self.training_noise(n))
            real_logits = self.discriminate(real)
            fake_logits = self.discriminate(fake)
            loss_d = discriminator_loss(real_logits, fake_logits, kind)
            self.manual_update(opt_d, "train/loss_d", loss_d)
            self.observe_real_logits(real_logits)

        with self.toggled_optimizer(opt_g):
            fake = self.generator(self.training_noise(n))
            loss_g = generator_loss(self.discriminate(fake), kind)
            self.manual_update(opt_g, "train/loss_g", loss_g)

        self.end_iteration(loss_d, loss_g, real_logits, fake_logits)

    def paper_training_step(self, batch: tuple[Tensor, Tensor]) -> None:
        """One update of goodfeli/adversarial's AdversaryCost2: D's and G's gradients from the same fakes and
        dropout masks, G stepped first so that D's gradient reads its unstepped weights (a joint step)."""
        real, _ = batch
        opt_d, opt_g = self.optimizers()
        self.follow_paper_schedule(opt_d, opt_g)
        n = real.size(0)
        z = self.training_noise(n)
        with torch.no_grad():
            masks = self.discriminator.dropout_masks(n, real.flatten(1))

        with self.toggled_optimizer(opt_g):
            # The fakes as D is shown them (augmented where the run augments D's inputs), once for both.
            shown_fake = self.discriminator_input(self.generator(z))
            loss_g = generator_loss(self.discriminator(shown_fake, masks), "ns")
            self.manual_update(opt_g, "train/loss_g", loss_g)

        with self.toggled_optimizer(opt_d):
            real_logits = self.discriminate(real)
            fake_logits = self.discriminator(shown_fake.detach(), masks)
            loss_d = 0.5 * discriminator_loss(real_logits, fake_logits, "ns")
            self.manual_update(opt_d, "train/loss_d", loss_d)
            self.observe_real_logits(real_logits)

        self.end_iteration(loss_d, loss_g, real_logits, fake_logits)

    def end_iteration(self, loss_d: Tensor, loss_g: Tensor, real_logits: Tensor, fake_logits: Tensor) -> None:
        """After both updates: the EMA generator follows; the losses and mean logits are logged."""
        self.update_ema()
        self.log_training({"train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach()}, prog_bar=True)
        self.log_training(
            {"train/d_real": real_logits.detach().mean(), "train/d_fake": fake_logits.detach().mean()}
        )

    def follow_paper_schedule(self, *optimizers: torch.optim.Optimizer) -> None:
        """Set this update's rate and momentum, the velocity in pylearn2's step units (`set_sgd_rate`)."""
        lr = paper_learning_rate(self.iteration)
        momentum = paper_momentum(self.iteration_epoch)
        for optimizer in optimizers:
            set_sgd_rate(optimizer, lr, momentum)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        # D's mean logit on held-out reals. Not comparable with train/d_real (augmented inputs, batch norm in
        # training mode); the overfitting signal is val/d_logit_train against val/d_logit_val.
        real, _ = batch
        self.log_split_means({f"{stage}/d_real": self.discriminator(real).mean()}, len(real))

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.generator_ema is None:
            return
        self.generator_ema.update_parameters(self.generator)
        for averaged, live in zip(self.generator_ema.module.buffers(), self.generator.buffers(), strict=True):
            averaged.copy_(live)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.options.gan_training == "paper":
            # Learning rate and momentum are set before every update (`follow_paper_schedule`).
            sgd = {"lr": PAPER_LR, "momentum": PAPER_MOMENTUM}
            return [torch.optim.SGD(net.parameters(), **sgd) for net in (self.discriminator, self.generator)]
        # DCGAN's Adam settings; beta1 = 0.5 keeps the adversarial game from oscillating.
        betas = (0.5, 0.999) if self.options.gan_loss == "ns" else (0.0, 0.9)
        opt_d = adam(self.discriminator.parameters(), lr=self.options.lr, betas=betas)
        opt_g = adam(self.generator.parameters(), lr=self.options.lr, betas=betas)
        return [opt_d, opt_g]
