"""ShopStream serving stage."""
