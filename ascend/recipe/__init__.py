"""Recipes: the typed YAML that drives every stage.

    from ascend.recipe import load_recipe
    recipe = load_recipe("glm5/a3-w8a8", ["serve.max_model_len=65536"])
"""

from ascend.recipe.checks import check_recipe_fields
from ascend.recipe.load import load_recipe, origin, recipe_hash
from ascend.recipe.registry import builtin_names, builtin_root, resolve_ref
from ascend.recipe.schema import Recipe

__all__ = [
    "Recipe",
    "builtin_names",
    "builtin_root",
    "check_recipe_fields",
    "load_recipe",
    "origin",
    "recipe_hash",
    "resolve_ref",
]
