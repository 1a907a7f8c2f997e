"""What the organization is made of: the seed scenario's roles, the families people belong to, names, and resource ids."""

from __future__ import annotations

import random
from dataclasses import dataclass

# -- roles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleSpec:
    name: str
    base: str | None
    permissions: tuple[str, ...]
    description: str
    uses: tuple[str, ...]  # what holders typically do with it (TYPE:ACTION, repeated = more often)
    family: str = ""


def _r(rng: random.Random, n: int) -> int:
    """A random index below n (random.randrange costs several times more)."""
    return int(rng.random() * n)


def _p(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The seed scenario (ZenML's guide and the RBAC-for-ML article), shaped so that no ordinary role holds
# both sides of a default separation-of-duties rule (reports/rules/default_sod.toml): who builds
# pipelines never promotes model versions, who sets up connectors and secrets never reads their
# values (pipelines do, through Connector Consumer narrowed to one connector), who deploys does not
# change stacks. Only the System Administrator holds everything, so holders of it are kept few.
SEED_ROLES: tuple[RoleSpec, ...] = (
    RoleSpec(
        "data_scientist",
        "viewer",
        _p(
            "pipeline:create pipeline:update pipeline_run:create pipeline_run:delete run_template:create artifact:create "
            "artifact_version:create model:create model_version:create stack_component:create run_metadata:create "
            "tag:create code_repository:create service_connector:client"
        ),
        "Data Scientist: develops and runs pipelines; uses connectors without seeing their credentials",
        _p(
            "pipeline_run:create pipeline_run:create pipeline_run:read pipeline_run:read model:read "
            "model_version:create model_version:read artifact_version:read artifact_version:create pipeline:update "
            "run_metadata:create stack:read service_connector:client"
        ),
        "science",
    ),
    RoleSpec(
        "data_science_lead",
        "data_scientist",
        _p(
            "pipeline:delete model:update model_version:update run_template:update artifact:update tag:update "
            "pipeline_run:prune"
        ),
        "Data Science Lead: a Data Scientist who also curates models and cleans up pipelines",
        _p(
            "pipeline_run:read model_version:update model:update model:read pipeline_run:create pipeline:delete "
            "artifact_version:read"
        ),
        "science",
    ),
    RoleSpec(
        "ml_engineer",
        "viewer",
        _p(
            "pipeline_deployment:create pipeline_deployment:update pipeline_deployment:delete pipeline_build:create "
            "pipeline_run:create model_version:promote model_version:update service:create service:update "
            "service:delete run_template:create trigger:create trigger:update service_connector:client"
        ),
        "ML Engineer: builds, deploys and promotes models; does not author pipelines",
        _p(
            "pipeline_deployment:create pipeline_build:create model_version:promote model_version:read "
            "service:update service:read pipeline_run:create pipeline_run:read"
        ),
        "deploy",
    ),
    RoleSpec(
        "data_engineer",
        "viewer",
        _p(
            "pipeline:create pipeline:update pipeline_run:create artifact:create artifact:update artifact_version:create "
            "run_metadata:create stack_component:create code_repository:create trigger:create service_connector:client"
        ),
        "Data Engineer: builds and runs the data pipelines and the feature artifacts",
        _p(
            "pipeline_run:create pipeline_run:create pipeline:update artifact_version:create artifact_version:create "
            "artifact:read pipeline_run:read run_metadata:create"
        ),
        "data",
    ),
    RoleSpec(
        "research_analyst",
        "viewer",
        _p("run_metadata:create tag:create artifact_version:share"),
        "Research Analyst: reads experiment results and model metrics, annotates runs",
        _p(
            "model_version:read pipeline_run:read artifact_version:read artifact_version:read "
            "run_metadata:create run_metadata:read"
        ),
        "analysis",
    ),
    RoleSpec(
        "product_manager",
        "viewer",
        _p("model:share tag:create"),
        "Product Manager: follows model performance; changes nothing",
        _p("model:read model:read model_version:read pipeline_run:read tag:create"),
        "product",
    ),
    RoleSpec(
        "mlops_platform_engineer",
        "viewer",
        _p(
            "service_connector:create service_connector:update service_connector:delete service_connector:share "
            "service_connector:client stack:* stack_component:* flavor:* secret:create secret:update secret:delete "
            "service:* pipeline_build:* code_repository:update"
        ),
        "MLOps Platform Engineer: runs the stacks and the service connectors; sets credentials, never reads them back",
        _p(
            "stack:update stack_component:update stack_component:create service_connector:update "
            "service_connector:read secret:update flavor:read service:read pipeline_run:read stack:read"
        ),
        "platform",
    ),
    RoleSpec(
        "system_administrator",
        "admin",
        (),
        "System Administrator: full control of a tenant (break-glass; keep the holders few)",
        _p("stack:read stack:update service_connector:read pipeline_run:read secret:read model:read"),
        "admin",
    ),
    RoleSpec(
        "connector_consumer",
        None,
        _p("service_connector:read service_connector:read_secret_value"),
        "Connector Consumer: reads one connector's credentials; assign it narrowed to service_connector/NAME",
        _p("service_connector:read_secret_value service_connector:read_secret_value service_connector:read"),
        "connector",
    ),
)
PREDEFINED_USES: dict[str, tuple[str, ...]] = {
    "viewer": _p("model:read pipeline_run:read artifact_version:read model_version:read pipeline:read"),
    "editor": _p("pipeline_run:create pipeline_run:read artifact_version:create model:read pipeline:create"),
    "admin": _p("stack:read stack:update pipeline_run:read model:read"),
    "org_admin": _p("member:read member:update team:update role:read tenant:read"),
    "org_editor": _p("member:read team:update tenant:read"),
    "org_viewer": _p("member:read tenant:read team:read"),
}
PREDEFINED_PERMS: dict[str, tuple[str, ...]] = {}  # filled lazily from ledger.vocabulary
# Permissions a generated variant of a seed role may add: none of them is a side of a
# separation-of-duties pair or a privilege (update/delete of infrastructure, secrets).
SAFE_EXTRAS = _p(
    "tag:update tag:create run_metadata:create artifact_version:share model:share artifact:share "
    "trigger:read event_source:read action:read run_template:create pipeline_run:prune"
)
FAMILIES = {  # family: (weight among people, roles of the family a person may hold)
    "science": (40, ("data_scientist", "data_science_lead")),
    "deploy": (14, ("ml_engineer",)),
    "data": (16, ("data_engineer",)),
    "analysis": (10, ("research_analyst",)),
    "product": (8, ("product_manager",)),
    "platform": (10, ("mlops_platform_engineer",)),
}

# -- names -------------------------------------------------------------------------------------

FIRST = _p(
    "amara bjorn chen dilnoza emeka farah goran hana ivan jun kofi lucia mei noor olga priya rafael sven "
    "otto tomas ulla vikram wen xavier yara zainab aiko bruno carla dmitri elif femi gita hugo ines jonas "
    "kiri leon maya nils oskar paula quinn rosa sami tara umar vera wanjiru yusuf zora anil beatriz cyrus "
    "daria eitan fatima"
)
LAST = _p(
    "okafor larsen wang karimova eze haddad petrovic sato ivanov park mensah romero li hassan novak sharma "
    "silva berg lind horvat nilsson rao zhang dubois costa abubakar tanaka rossi moreau yilmaz adeyemi "
    "gupta fischer lopez weber kim nakamura ortiz schmidt jensen"
)
MODELS = _p(
    "fraud-detector churn-predictor recsys-ranker demand-forecast credit-risk support-assistant "
    "image-tagger price-optimizer"
)
PROJECTS = _p(
    "fraud payments search ads risk vision nlp forecasting pricing recsys growth support ranking "
    "maps speech churn credit catalog logistics health"
)


def _ids_for(rtype: str, rng: random.Random) -> list[str]:
    """A pool of realistic resource ids for one resource type."""
    m = MODELS
    pools: dict[str, list[str]] = {
        "model": list(m),
        "model_version": [f"{x}-v{n}" for x in m for n in range(1, 25)],
        "pipeline": [f"{k}-{x}" for x in m for k in ("train", "features", "batch-score")],
        "pipeline_run": [f"train-{x}-{n}" for x in m for n in rng.sample(range(1, 9000), 25)],
        "pipeline_deployment": [f"{x}-serving" for x in m],
        "pipeline_build": [f"{x}-build-{n}" for x in m for n in range(1, 12)],
        "artifact": [f"{x}-{k}" for x in m for k in ("features", "dataset", "eval-report")],
        "artifact_version": [f"{x}-features-{n}" for x in m for n in range(1, 30)],
        "stack": ["gcp-vertex", "aws-sagemaker", "k8s-prod", "k8s-staging", "local-docker"],
        "stack_component": [
            "s3-artifact-store",
            "gcs-artifact-store",
            "mlflow-tracker",
            "kubeflow-orchestrator",
            "ecr-registry",
            "seldon-deployer",
        ],
        "service": [f"{x}-endpoint" for x in m],
        "run_template": [f"retrain-{x}" for x in m],
        "run_metadata": [f"train-{x}-{n}" for x in m for n in range(1, 20)],
        "secret": ["db-readonly", "wandb-api-key", "hf-token", "slack-webhook"],
        "flavor": ["sagemaker", "vertex", "kubeflow", "mlflow", "seldon"],
        "code_repository": ["ml-monorepo", "feature-store", "serving-infra"],
        "tag": ["prod-candidate", "baseline", "experiment", "deprecated"],
        "trigger": [f"nightly-{x}" for x in m],
        "trigger_execution": [f"nightly-{x}-{n}" for x in m for n in range(1, 40)],
        "event_source": ["github-push", "s3-drop"],
        "action": ["retrain", "notify"],
    }
    return pools.get(rtype, [f"{rtype.replace('_', '-')}-{n}" for n in range(1, 6)])
