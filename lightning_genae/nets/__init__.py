"""Plain nn.Module networks, apart from the LightningModules that train them."""
