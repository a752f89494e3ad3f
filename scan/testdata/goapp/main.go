// Command goapp is a scanner test fixture: it links golang.org/x/text v0.3.5, which has
// known vulnerabilities.
package main

import (
	"fmt"

	"golang.org/x/text/language"
)

func main() {
	fmt.Println(language.English)
}
