"""The cluster commands: ``render`` (Kubernetes manifests for a mesh), ``crd`` (the
CustomResourceDefinitions) and ``operator`` (reconciles AsyncActor resources)."""

from __future__ import annotations

from pathlib import Path

import click

from asya_agents.cli.app import main

__all__ = ["crd", "operator", "render"]



@main.command()
@click.argument("mesh", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder to write into")
@click.option("--transport", type=click.Choice(["rabbitmq", "sqs"]), default=None,
              help="Broker on the cluster [mesh.yaml's, if rabbitmq or sqs; else rabbitmq]")
@click.option("--image", "runtime_image", default="asya-runtime:latest", show_default=True,
              help="Image of crew actors, the console, and actors without spec.image")
@click.option("--image-root", default="/app", show_default=True,
              help="Where the image holds the project tree")
@click.option("--project-root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder that the image holds at --image-root [cwd]")
@click.option("--queue-prefix", default="asya", show_default=True)
@click.option("--sqs-region", default="us-east-1", show_default=True)
@click.option("--sqs-endpoint", default=None, help="SQS endpoint URL (LocalStack, moto)")
@click.option("--redis-url", default=None,
              help="Redis of actor-wide rate limits for actors that name none "
                   "(spec.resiliency.rateLimit.redisUrl); without it such an actor is refused")
@click.option("--overrides", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="AsyncActor documents merged over the mesh's actors")
@click.option("--flavors", "flavor_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="More folders of Flavor files, for --overrides")
def render(mesh: Path, out_dir: Path, transport: str | None, runtime_image: str,
           image_root: str, project_root: Path | None, queue_prefix: str, sqs_region: str,
           sqs_endpoint: str | None, redis_url: str | None, overrides: Path | None,
           flavor_dirs: tuple[Path, ...]) -> None:
    """Write Kubernetes manifests for MESH into a kustomize folder.

    Per actor a Deployment and a KEDA ScaledObject; per mesh the mesh ConfigMap, a
    ServiceAccount, a TriggerAuthentication (reading a Secret), the crew actors and the
    review console. Same input, same bytes. An actor with an actor-wide rateLimit needs a
    Redis every replica reaches: its own redisUrl, or --redis-url.
    """
    from asya_agents.k8s.render import (
        RenderOptions,
        apply_overrides,
        render_mesh,
        write_rendered,
    )
    from asya_agents.manifest import load_flavors, load_mesh

    loaded = load_mesh(mesh)
    if overrides is not None:
        loaded = apply_overrides(loaded, overrides, load_flavors(flavor_dirs))
    declared = loaded.mesh.spec.transport
    kind = transport or (declared if declared in ("rabbitmq", "sqs") else "rabbitmq")
    options = RenderOptions(
        transport=kind,  # type: ignore[arg-type]
        runtime_image=runtime_image, image_root=image_root, project_root=project_root,
        queue_prefix=queue_prefix, sqs_region=sqs_region, sqs_endpoint=sqs_endpoint,
        redis_url=redis_url,
    )
    written = write_rendered(render_mesh(loaded, options), out_dir)
    click.echo(f"wrote {len(written)} files for mesh {loaded.name} ({kind}) to {out_dir}")


@main.command()
@click.option("-o", "--output", "out_dir", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per CRD into this folder instead of printing")
def crd(out_dir: Path | None) -> None:
    """Print the CustomResourceDefinitions (AsyncActor, Flavor)."""
    from asya_agents.k8s.crd import crd_documents, dump_yaml

    docs = crd_documents()
    if out_dir is None:
        click.echo(dump_yaml(docs), nl=False)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (out_dir / f"{doc['metadata']['name']}.yaml").write_text(dump_yaml([doc]))
    click.echo(f"wrote {len(docs)} CRDs to {out_dir}")


@main.command()
@click.option("--transport", type=click.Choice(["rabbitmq", "sqs"]), default="rabbitmq",
              show_default=True, help="Broker the actors use")
@click.option("--namespace", "namespaces", multiple=True,
              help="Watch only these namespaces [all]")
@click.option("--image", "runtime_image", default="asya-runtime:latest", show_default=True,
              help="Image of crew actors, the console, and actors without spec.image")
@click.option("--liveness", default=None, help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
def operator(transport: str, namespaces: tuple[str, ...], runtime_image: str,
             liveness: str | None) -> None:
    """Run the operator that reconciles AsyncActor resources (needs kopf)."""
    from asya_agents.k8s.operator import run_operator

    run_operator(transport=transport, namespaces=list(namespaces), runtime_image=runtime_image,
                 liveness=liveness)
