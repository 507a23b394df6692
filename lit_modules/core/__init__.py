"""Pure torch, no Lightning: the floor everything else stands on (objectives import only this)."""
