"""AMC (He et al., ECCV 2018) as the method ``amc``: DDPG picks each layer's preserve ratio under an action wall.

Modules: ``layers`` (AMC's layer t per prunable group, state features, channel ranking), ``env`` (the
gymnasium environment with the action wall), ``rewards``, ``ddpg`` (the agent, on TorchRL pieces) and
``search`` (the registered method: search loop, checkpoints, search log). Decisions: docs/amc.md.
"""
