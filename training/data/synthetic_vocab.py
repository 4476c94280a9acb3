"""Words the synthetic shop builds product titles from, one vocabulary per category.

A title is ``"<brand> <attribute> <noun>"``. Every word is specific to its category
(plus a few shared quality words), so a text encoder that reads the title can place a
brand-new item near the items it resembles: the cold-start signal the generator promises.
Nouns carry a typical price in the shop's currency; brands and attributes carry none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CategoryVocab:
    """Brands, attributes and (noun, typical price) pairs of one category."""

    brands: tuple[str, ...]
    attributes: tuple[str, ...]
    nouns: tuple[tuple[str, float], ...]


# Shared quality words: an item of very high / very low latent quality gets one of these
# instead of a category attribute, so "premium" and "budget" mean the same in every category.
PREMIUM_WORDS: tuple[str, ...] = ("premium", "deluxe", "pro")
BUDGET_WORDS: tuple[str, ...] = ("budget", "basic", "value")

VOCABULARIES: dict[str, CategoryVocab] = {
    "electronics": CategoryVocab(
        brands=("Voltix", "Nexora", "Zentek", "Ampero", "Lumicore"),
        attributes=("wireless", "portable", "compact", "fast-charging", "waterproof",
                    "ergonomic", "rgb", "slim"),
        nouns=(("wireless earbuds", 49.0), ("usb-c charger", 19.0), ("bluetooth speaker", 59.0),
               ("smart watch", 199.0), ("gaming mouse", 39.0), ("mechanical keyboard", 89.0),
               ("4k monitor", 329.0), ("power bank", 29.0),
               ("noise cancelling headphones", 179.0), ("hdmi cable", 12.0),
               ("webcam", 59.0), ("tablet", 299.0)),
    ),
    "fashion": CategoryVocab(
        brands=("Northwear", "Velluto", "Urbanfold", "Maison Keel", "Kestrel & Co"),
        attributes=("slim-fit", "oversized", "vintage", "organic cotton", "linen", "striped",
                    "water-repellent", "classic"),
        nouns=(("denim jacket", 79.0), ("cotton t-shirt", 19.0), ("running sneakers", 89.0),
               ("leather belt", 35.0), ("wool scarf", 29.0), ("summer dress", 49.0),
               ("hoodie", 45.0), ("chino trousers", 55.0), ("ankle boots", 99.0),
               ("baseball cap", 22.0)),
    ),
    "home_garden": CategoryVocab(
        brands=("Hearthly", "Greenmoor", "Casa Lume", "Fernwick", "Homestead"),
        attributes=("ceramic", "bamboo", "outdoor", "cozy", "minimalist", "handwoven", "solar",
                    "rustic"),
        nouns=(("garden hose", 29.0), ("plant pot", 24.0), ("led desk lamp", 39.0),
               ("throw blanket", 35.0), ("bath towel set", 29.0), ("patio chair", 79.0),
               ("watering can", 15.0), ("scented candle", 14.0), ("storage basket", 19.0),
               ("bed sheet set", 49.0)),
    ),
    "beauty": CategoryVocab(
        brands=("Lumiere", "Petalia", "Glowen", "Aurae", "Skinfolk"),
        attributes=("hydrating", "fragrance-free", "vegan", "matte", "organic", "sensitive-skin",
                    "long-lasting", "travel-size"),
        nouns=(("face moisturiser", 24.0), ("lipstick", 16.0), ("shampoo", 9.0),
               ("vitamin c serum", 29.0), ("sunscreen spf50", 14.0), ("hair dryer", 49.0),
               ("nail polish", 8.0), ("perfume", 59.0), ("sheet mask pack", 12.0),
               ("body lotion", 11.0)),
    ),
    "sports": CategoryVocab(
        brands=("Stridex", "Peakline", "Ironfox", "Velocis", "Summitra"),
        attributes=("lightweight", "non-slip", "breathable", "adjustable", "insulated",
                    "pro-grip", "foldable", "reflective"),
        nouns=(("yoga mat", 29.0), ("dumbbell set", 59.0), ("running shorts", 25.0),
               ("tennis racket", 89.0), ("football", 22.0), ("cycling helmet", 69.0),
               ("water bottle", 15.0), ("resistance bands", 19.0), ("hiking backpack", 79.0),
               ("jump rope", 12.0)),
    ),
    "toys": CategoryVocab(
        brands=("Tinkerbox", "Little Oak", "Jollyfox", "Brightbean", "Playwell"),
        attributes=("wooden", "educational", "colourful", "battery-powered", "magnetic",
                    "glow-in-the-dark", "toddler-safe", "musical"),
        nouns=(("wooden train set", 39.0), ("building blocks", 29.0),
               ("plush teddy bear", 19.0), ("jigsaw puzzle", 17.0),
               ("remote control car", 45.0), ("doll house", 69.0), ("board game", 29.0),
               ("science kit", 35.0), ("toy kitchen", 79.0), ("stacking rings", 12.0)),
    ),
    "books": CategoryVocab(
        brands=("Inkwell Press", "Larkspur Books", "Meridian House", "Quillstone",
                "Paperkite"),
        attributes=("hardcover", "paperback", "illustrated", "bestselling", "signed",
                    "annotated", "large-print", "collector's edition"),
        nouns=(("mystery novel", 14.0), ("cookbook", 24.0), ("children's picture book", 11.0),
               ("science fiction novel", 15.0), ("travel guide", 19.0), ("biography", 22.0),
               ("self-help book", 17.0), ("graphic novel", 20.0),
               ("poetry collection", 13.0), ("history book", 26.0)),
    ),
    "grocery": CategoryVocab(
        brands=("Farmhouse", "Goldleaf", "Pure Acre", "Hillside", "Nutrio"),
        attributes=("organic", "fair-trade", "gluten-free", "wholegrain", "low-sugar",
                    "family-size", "single-origin", "vegan"),
        nouns=(("ground coffee", 9.0), ("green tea", 5.0), ("olive oil", 11.0),
               ("dark chocolate", 3.0), ("pasta", 2.5), ("granola", 6.0), ("honey", 8.0),
               ("peanut butter", 5.0), ("sparkling water", 4.0), ("basmati rice", 4.0)),
    ),
    "seasonal": CategoryVocab(
        brands=("Yuletide", "Frostberry", "Evergleam", "North Pole Co", "Merrymade"),
        attributes=("festive", "glittering", "handmade", "snowflake", "red-and-gold",
                    "light-up", "reusable", "nordic"),
        nouns=(("christmas ornament", 9.0), ("advent calendar", 19.0), ("string lights", 15.0),
               ("christmas tree", 89.0), ("wrapping paper", 6.0), ("gift box set", 25.0),
               ("santa hat", 8.0), ("snow globe", 18.0), ("holiday wreath", 35.0),
               ("candy cane pack", 4.0)),
    ),
    "pets": CategoryVocab(
        brands=("Pawsome", "Furtail", "Kibblo", "Tailwind", "Barkley"),
        attributes=("grain-free", "durable", "orthopedic", "natural", "odour-control",
                    "interactive", "small-breed", "washable"),
        nouns=(("dog food", 39.0), ("cat litter", 15.0), ("chew toy", 9.0), ("pet bed", 45.0),
               ("cat scratcher", 29.0), ("dog leash", 17.0), ("aquarium filter", 34.0),
               ("bird feeder", 21.0), ("pet shampoo", 11.0), ("treat pouch", 7.0)),
    ),
    "kitchen": CategoryVocab(
        brands=("Culina", "Ironhearth", "Saucier", "Whiskwell", "Panterra"),
        attributes=("stainless steel", "non-stick", "cast iron", "cordless", "dishwasher-safe",
                    "compact", "professional", "glass"),
        nouns=(("chef knife", 59.0), ("frying pan", 39.0), ("blender", 79.0),
               ("coffee grinder", 45.0), ("cutting board", 22.0), ("stand mixer", 249.0),
               ("skillet", 49.0), ("kettle", 35.0), ("measuring cups", 12.0),
               ("food storage set", 25.0)),
    ),
    "office": CategoryVocab(
        brands=("Deskly", "Papernest", "Clerk & Co", "Officina", "Ledgerline"),
        attributes=("recycled", "refillable", "magnetic", "adjustable", "a5", "ergonomic",
                    "dotted", "lockable"),
        nouns=(("notebook", 6.0), ("ballpoint pen set", 9.0), ("desk organiser", 19.0),
               ("office chair", 189.0), ("printer paper", 8.0), ("stapler", 11.0),
               ("whiteboard", 39.0), ("laptop stand", 35.0), ("sticky notes", 5.0),
               ("filing cabinet", 129.0)),
    ),
}

DEFAULT_CATEGORIES: tuple[str, ...] = (
    "electronics", "fashion", "home_garden", "beauty", "sports",
    "toys", "books", "grocery", "seasonal", "pets",
)
