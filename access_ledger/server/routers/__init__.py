"""One APIRouter per group of endpoints, each declaring its token scope once."""
