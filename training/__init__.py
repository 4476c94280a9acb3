"""ShopStream training stage."""
