"""Student distillation from bitext: losses (KD, OT, contrastive, combined), batched Sinkhorn, trainer."""
