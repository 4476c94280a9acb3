"""ShopStream tuning stage."""
