package replicate_test

import (
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/portcullis/portcullis/internal/replicate"
)

var cmpIgnoreTimes = cmpopts.IgnoreFields(replicate.Failure{}, "Since", "Last")
