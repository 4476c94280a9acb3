"""What the model reads: purchase profiles and histories, example arrays, the replay buffer."""
