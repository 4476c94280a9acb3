"""ShopStream cluster stage."""
