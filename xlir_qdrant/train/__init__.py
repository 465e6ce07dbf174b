"""The paper's recipe: English-only training of a text head and image projection over frozen
towers, with the PATR and M3 ranking losses (docs/training.md).

    from xlir_qdrant.train.config import TrainConfig
    from xlir_qdrant.train.data import load_pairs
    from xlir_qdrant.train.loop import run
    report = run(load_pairs("pairs.tsv"), Path("ckpt"), TrainConfig(loss="m3", epochs=5))

The parts: config (TrainConfig, no torch), data, losses, features, loop, checkpoint. Nothing is
imported here, so reading the configuration never loads torch.
"""
