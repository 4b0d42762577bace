"""akl_core.lab: the explorer built on the loss library (needs the `lab` extra).

Toy lab (`toy`), models (`models`), data (`data`), the distillation engine (`distill`),
evaluation (`evaluate`), run folders (`runs`), per-position diagnostics (`inspector`),
figures (`viz`) and the `akl` command (`cli`). Import the submodules you need:

    from akl_core.lab import toy, viz

`akl_core` itself (the losses) needs torch only and never imports this package.
"""
