"""Training of the autoencoder and the latent diffusion UNet, distributed training helpers and bundle export.

Stages: `autoencoder.train_autoencoder` -> `diffusion.train_diffusion` (on precomputed latents) ->
`export.export_bundle`. Each stage reads its run folder's `config.json`, so the stages stay consistent; a resumed
UNet stage reads its own `diffusion/config.json` (`runner.run_config_path`), which may differ from the run's.
"""
