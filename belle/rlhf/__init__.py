"""RLHF pieces that need no Ray: the math (PPO and pair losses, experience), PPO's placement (placement, planner),
its roles (roles, rollout; their batches and forward passes in batch and forward) and the host of a pool's roles,
the weights' sync to a rollout pool, the controller's state (state), how the controller calls the roles (calls)
and an in-process stand-in for the pools (local)."""
