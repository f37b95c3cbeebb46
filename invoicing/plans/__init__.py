"""One module per plan kind: MAU (seed 001), MAU with a minimum (seed 004), licences (seed
004), seats (seed 002), tiers and add-ons (seeds 000 and 003) and their subscriptions."""

__all__: list[str] = []
