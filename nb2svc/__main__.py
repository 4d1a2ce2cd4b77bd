from nb2svc.cli import main

main()
