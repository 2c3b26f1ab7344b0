"""Recipes: the typed YAML that drives every stage.

    from ascend.recipe import load_recipe
    recipe = load_recipe("glm5/a3-w8a8", ["serve.max_model_len=65536"])
"""

from ascend.recipe.checks import check_recipe_fields
from ascend.recipe.load import check_partial, load_recipe, origin, recipe_hash
from ascend.recipe.registry import builtin_names, builtin_root, is_partial, resolve_ref
from ascend.recipe.schema import Recipe

__all__ = [
    "Recipe",
    "builtin_names",
    "builtin_root",
    "is_partial",
    "check_partial",
    "check_recipe_fields",
    "load_recipe",
    "origin",
    "recipe_hash",
    "resolve_ref",
]
