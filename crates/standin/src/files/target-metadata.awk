# Stand-in for `scripts/target-metadata.pl profile_mk`: turns .targetinfo into .profiles.mk.
# Written in awk so that it runs before the prerequisite check (which looks for python3).

function escape(text) {
	gsub(/\$/, "$$", text)
	gsub(/#/, "\\#", text)
	return text
}

function value(line) {
	sub(/^[^:]*: ?/, "", line)
	return escape(line)
}

/^Target-Profile: / {
	current = value($0)
	order[++count] = current
	next
}
/^Target-Profile-Name: / { name[current] = value($0); next }
/^Target-Profile-hasImageMetadata: / { meta[current] = value($0); next }
/^Target-Profile-SupportedDevices: / { supported[current] = value($0); next }
/^Target-Profile-Packages: / { packages[current] = value($0); next }

END {
	names = ""
	for (i = 1; i <= count; i++)
		names = names (i > 1 ? " " : "") order[i]
	print "PROFILE_NAMES = " names
	for (i = 1; i <= count; i++) {
		p = order[i]
		print p "_NAME:=" name[p]
		print p "_HAS_IMAGE_METADATA:=" (p in meta ? meta[p] : 0)
		print p "_SUPPORTED_DEVICES:=" supported[p]
		print p "_PACKAGES:=" packages[p]
	}
}
