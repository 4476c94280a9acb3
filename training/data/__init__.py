"""ShopStream training/data stage."""
