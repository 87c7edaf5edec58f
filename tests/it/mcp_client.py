"""Drives the real `imagegen mcp` binary with the official MCP Python SDK (`mcp` on PyPI),
a client this project did not write. Run by tests/it/mcp.rs, which prepares the fleets and
the `file://` stand-in mirror and passes them as one JSON argument:

    {"binary": ..., "env": {...}, "fleet": DIR, "broken_fleet": DIR, "profile": ID}

Exits 0 when every check passed; a failed check raises (non-zero exit, with a traceback).
"""

import asyncio
import hashlib
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

EXPECTED_TOOLS = {
    "list_profiles",
    "get_profile",
    "validate",
    "plan",
    "build_image",
    "build_images_batch",
    "apply",
    "list_builds",
    "get_build_log",
    "list_artifacts",
    "list_builders",
    "ensure_builder",
    "flash_artifact",
}


def server(config, fleet_dir):
    return StdioServerParameters(
        command=config["binary"], args=["mcp"], env=config["env"], cwd=fleet_dir
    )


def check_schemas(tools):
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == EXPECTED_TOOLS, sorted(by_name)
    for tool in tools:
        schema = tool.input_schema
        assert schema["type"] == "object", (tool.name, schema)
        assert tool.description, tool.name
    build = by_name["build_image"].input_schema
    assert build["required"] == ["profile_id"], build
    assert build["properties"]["profile_id"]["type"] == "string", build
    assert build["properties"]["force"]["type"] == "boolean", build
    assert build["additionalProperties"] is False, build
    batch = by_name["build_images_batch"].input_schema
    assert batch["properties"]["fail_fast"]["default"] is True, batch
    assert batch["properties"]["profiles"]["type"] == "array", batch
    log = by_name["get_build_log"].input_schema
    assert log["required"] == ["build_key"], log
    assert by_name["list_profiles"].annotations.read_only_hint is True
    flash = by_name["flash_artifact"]
    assert sorted(flash.input_schema["required"]) == ["artifact", "device"], flash.input_schema
    assert flash.input_schema["properties"]["force"]["type"] == "boolean", flash.input_schema
    assert flash.annotations.destructive_hint is True, flash.annotations


async def broken_fleet_session(config):
    async with stdio_client(server(config, config["broken_fleet"])) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("validate", {})
            assert result.is_error, result
            error = result.structured_content["error"]
            assert error["code"] == "validation", error
            problems = error["problems"]
            assert len(problems) >= 2, problems
            located = {
                (p["location"]["file"], p["location"]["line"], p["location"]["column"])
                for p in problems
                if "location" in p
            }
            # `pakages` is on line 8 of the profile, `mode` on line 12 (see mcp.rs).
            assert ("profiles/bad.yaml", 8, 1) in located, located
            assert any(file == "profiles/bad.yaml" and line == 12 for file, line, _ in located), located
            text = result.content[0].text
            assert "profiles/bad.yaml:8:1" in text, text
            print("broken fleet: validate reported", len(problems), "located problems")


def artifact_digests(build):
    digests = {}
    for artifact in build["artifacts"]:
        with open(artifact["store_path"], "rb") as blob:
            actual = hashlib.sha256(blob.read()).hexdigest()
        assert actual == artifact["sha256"], artifact
        digests[artifact["name"]] = artifact["sha256"]
    assert digests, build
    return digests


async def flash_without_permission(session, config, digests):
    """The server was started without --allow-flash: even `force: true` is a dry run, whose
    checks here refuse a regular file, which stays untouched."""
    target = os.path.join(config["fleet"], "not-a-disk.img")
    with open(target, "wb") as file:
        file.write(b"precious")
    sha = sorted(digests.values())[0]
    result = await session.call_tool(
        "flash_artifact", {"artifact": sha[:12], "device": target, "force": True}
    )
    assert result.is_error, result.content
    content = result.structured_content
    assert content["dry_run"] is True, content
    assert content["dry_run_reason"] == "the server was started without `--allow-flash`", content
    assert content["error"]["code"] == "device_not_block", content
    with open(target, "rb") as file:
        assert file.read() == b"precious"
    print("flash_artifact without --allow-flash: a dry run, refused:", content["error"]["code"])


async def fleet_session(config):
    profile = config["profile"]
    async with stdio_client(server(config, config["fleet"])) as (read, write):
        async with ClientSession(read, write) as session:
            initialized = await session.initialize()
            assert initialized.server_info.name == "imagegen", initialized
            assert initialized.capabilities.tools is not None
            assert initialized.capabilities.resources is not None

            check_schemas((await session.list_tools()).tools)

            resources = {r.uri: r for r in (await session.list_resources()).resources}
            uri = f"imagegen://fleet/profiles/{profile}"
            assert {"imagegen://fleet/manifest", uri} <= {str(u) for u in resources}, resources
            read_back = await session.read_resource(uri)
            assert f"profile_id: {profile}" in read_back.contents[0].text, read_back

            missing = await session.call_tool("get_profile", {"profile_id": "no-such"})
            assert missing.is_error
            assert missing.structured_content["error"]["code"] == "profile_not_found"

            progress = []

            async def on_progress(value, total, message):
                progress.append((value, total, message))

            first = await session.call_tool(
                "build_image", {"profile_id": profile}, progress_callback=on_progress
            )
            assert not first.is_error, first.content
            built = first.structured_content
            assert built["result"] == "built" and built["cache_hit"] is False, built
            first_digests = artifact_digests(built)
            assert progress, "no progress notifications"
            values = [value for value, _, _ in progress]
            assert values == sorted(values) and len(set(values)) == len(values), values

            second = await session.call_tool("build_image", {"profile_id": profile})
            assert not second.is_error, second.content
            reused = second.structured_content
            assert reused["result"] == "reused" and reused["cache_hit"] is True, reused
            assert artifact_digests(reused) == first_digests
            assert reused["build_key"] == built["build_key"]

            await flash_without_permission(session, config, first_digests)

            planned = await session.call_tool("plan", {})
            assert not planned.is_error, planned.content
            plan = planned.structured_content
            assert plan["format_version"].startswith("1."), plan
            summary = plan["summary"]
            changes = sum(summary[kind] for kind in ("fetch", "build", "rebuild", "flash", "remove"))
            assert changes == 0, summary
            assert planned.content[0].text.startswith("Plan: 0 to fetch, 0 to build"), planned.content[0].text
            print(
                "fleet: built then reused",
                len(first_digests),
                "artifacts;",
                len(progress),
                "progress notifications; plan has no changes",
            )


async def main():
    config = json.loads(sys.argv[1])
    await broken_fleet_session(config)
    await fleet_session(config)
    print("mcp python client: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
