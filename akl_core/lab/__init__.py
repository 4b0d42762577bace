"""akl_core.lab: the explorer built on the loss library (needs the `lab` extra).

Toy lab (`toy`), models (`models`), data (`data`), runs' config and records and the level-2 fit
(`distill`), KDTrainer on transformers' Trainer (`trainer`), the engine on it (`engine`),
train-save-evaluate (`experiment`, the one path of every front-end), offline teachers
(`teacher_cache`), per-position diagnostics (`diagnostics`; `inspector` for a text),
evaluation (`evaluate`), run folders (`runs`), figures (`viz`) and the `akl` command (`cli`).
Import the submodules you need:

    from akl_core.lab import toy, viz

`akl_core` itself (the losses) needs torch only and never imports this package.
"""
